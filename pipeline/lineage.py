"""Lineage of a pipeline run: which code, data and params produced a model.

A version's identity (`lineage_key`) is built from content only: the digest of the stage code as
it is on disk (committed or not), the data digest and the digest of the params that shape the
model. The git commit and dirty flag are recorded beside it, for people, but never decide it.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import yaml

from pipeline import layout
from pipeline.config import Params, digest
from pipeline.io import read_json


def file_sha256(path: Path | str) -> str:
    """sha256 (hex, 64 characters) of a file's bytes, read in 1 MiB blocks."""
    sha = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


# The code a pipeline run executes: the library, the flows and the DAG. Globs relative to the root.
CODE_GLOBS = ("pipeline/**/*.py", "flows/**/*.py", layout.DVC_YAML)
# Params sections that never change the weights or the metrics: the gate, the schedule, the study.
NON_MODEL_SECTIONS = {"register", "schedule", "study"}


def code_digest(root: Path) -> str:
    """sha256 over the stage source files as they are on disk: sorted relative paths and bytes.

    Uncommitted edits count, caches (__pycache__) do not; a renamed file changes the digest.
    """
    root = Path(root)
    files = {path for pattern in CODE_GLOBS for path in root.glob(pattern) if path.is_file() and "__pycache__" not in path.parts}
    return tree_digest(root, list(files))


def tree_digest(root: Path, files: list[Path]) -> str:
    """sha256 over files (paths relative to `root`, length-prefixed, and their bytes' sha256)."""
    sha = hashlib.sha256()
    for path in sorted(files):
        relative = path.relative_to(root).as_posix().encode()
        sha.update(len(relative).to_bytes(4, "big") + relative)  # length-prefixed: no path/content ambiguity
        sha.update(bytes.fromhex(file_sha256(path)))
    return sha.hexdigest()


def suites_digest(params: Params, root: Path) -> str:
    """Digest of the test images the metrics were computed on: every file of every evaluated suite
    (clean, rainy, rain masks, manifests), not the validation suite or the gallery. Two versions
    with different digests were scored on different images and cannot be compared rule by rule."""
    folder = Path(root) / params.paths.suites
    if not folder.is_dir():
        return "unknown"
    files = [p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).parts[0] not in ("val", layout.GALLERY)]
    return tree_digest(folder, files) if files else "unknown"


def model_params_digest(params: Params) -> str:
    """Digest of the params that determine the model (everything but the gate, schedule, study)."""
    return digest(params.model_dump(mode="json", exclude=NON_MODEL_SECTIONS))


# The tracked files that define a run (git_dirty looks at these only): outputs DVC rewrites, such as
# metrics files and the autostaged dvc.lock, say nothing about whether the run matches its commit.
DEFINING_PATHS = ("pipeline", "flows", layout.DVC_YAML, layout.PARAMS, layout.POOL_DVC, "pyproject.toml", "requirements.txt")


def git_commit(root: Path) -> tuple[str, bool]:
    """(HEAD commit or 'none', whether the files that define the run differ from it)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *DEFINING_PATHS],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        return commit, bool(dirty)
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "none", True


def data_digest(params: Params, root: Path) -> str:
    """The pool's DVC digest (data.dvc md5) when tracked, else a digest of its manifest."""
    dvc_file = root / f"{params.paths.pool}.dvc"
    if dvc_file.is_file():
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or [{}]
        if outs[0].get("md5"):
            return outs[0]["md5"].removesuffix(".dir")
    manifest = root / params.paths.pool / layout.MANIFEST
    return file_sha256(manifest)[:32] if manifest.is_file() else "unknown"


def lineage_tags(params: Params, root: Path, flow_run_id: str | None = None) -> dict[str, str]:
    """Tags recorded on every MLflow run and registered version."""
    commit, dirty = git_commit(root)
    model = root / params.paths.model / layout.MODEL
    prior = root / params.paths.prior / layout.PRIOR
    tags = {
        "git_commit": commit,  # informative: the identity is content (code_digest), not a commit
        "git_dirty": str(dirty).lower(),
        "code_digest": code_digest(root),
        "data_digest": data_digest(params, root),
        "params_digest": digest(params),
        "model_params_digest": model_params_digest(params),
        "profile": params.profile,
        "model_sha256": file_sha256(model) if model.is_file() else "missing",
        "prior_sha256": file_sha256(prior) if prior.is_file() else "missing",
        "suites_digest": suites_digest(params, root),  # the test images (not identity: a re-split keeps the model)
    }
    if flow_run_id:
        tags["prefect_flow_run_id"] = flow_run_id
    identity = ["code_digest", "data_digest", "model_params_digest"]
    prior_metrics = root / params.paths.prior / layout.METRICS  # a pretrained prior's origin is in it
    origin = read_json(prior_metrics).get("source") if prior_metrics.is_file() else None
    if params.prior.model.type == "pretrained_autoencoder" and origin:
        tags.update(prior_source_path=str(origin["path"]), prior_source_sha256=str(origin["sha256"]))
        identity.append("prior_source_sha256")  # new weights at the same path are a new lineage
    # Identity of a training configuration: same code on disk + data + params (+ outside prior).
    tags["lineage_key"] = digest({k: tags[k] for k in identity})
    return tags
