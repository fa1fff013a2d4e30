"""The workspace a pipeline run works in: a git repository with DVC, one run at a time."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from pipeline import layout
from pipeline.runtime import held_lock, state_path


class WorkspaceError(RuntimeError):
    """The workspace cannot host a run; the message says what to do."""


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)


def prepare_workspace(root: Path) -> None:
    """Check that `root` is a git repository with dvc.yaml and params.yaml; initialise DVC if needed."""
    root = Path(root)
    if subprocess.run(["git", "rev-parse", "--git-dir"], cwd=root, capture_output=True).returncode != 0:
        raise WorkspaceError(f"{root} is not a git repository: DVC needs one (run `git init` there)")
    for name in (layout.DVC_YAML, layout.PARAMS):
        if not (root / name).is_file():
            raise WorkspaceError(f"{root / name} is missing: run from the raincheck project root")
    if not (root / ".dvc").is_dir():
        result = _dvc(root, "init", "--quiet")
        if result.returncode != 0:
            raise WorkspaceError(f"`dvc init` failed in {root}:\n{result.stderr}")
        _dvc(root, "config", "core.check_update", "false")
        _dvc(root, "config", "core.autostage", "true")
        ignore_bytecode(root)
    install_plot_templates(root)


BYTECODE = "__pycache__/"


def ignore_bytecode(root: Path) -> None:
    """Add `__pycache__/` to the workspace's .dvcignore (as this repository's own has it): stages
    depend on code folders, and the bytecode a later stage's imports write there would otherwise
    make DVC re-run the earlier stages."""
    path = Path(root) / ".dvcignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    if BYTECODE not in (line.strip() for line in lines):
        path.write_text("\n".join([*lines, BYTECODE]) + "\n")


PLOT_TEMPLATES = Path(__file__).resolve().parents[1] / ".dvc" / "plots"


def install_plot_templates(root: Path) -> None:
    """Copy the project's custom DVC plot templates (dvc.yaml names `scatter_diagonal`) into a
    workspace whose .dvc/plots lacks them, or `dvc plots show` fails as a whole there."""
    import shutil

    if not PLOT_TEMPLATES.is_dir():
        return  # an installed package without the repository: nothing to copy
    target = Path(root) / ".dvc" / "plots"
    for template in PLOT_TEMPLATES.glob("*.json"):
        if not (target / template.name).is_file():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(template, target / template.name)


# Set while a process holds a workspace's run lock, to that lock's path; inherited by the processes
# it starts (`dvc repro` -> `python -m pipeline train`), which run under the holder's lock.
LOCK_ENV = "RAINCHECK_RUN_LOCK"


def lock_path(root: Path) -> Path:
    """`root/.raincheck/run.lock`, absolute (the same text whatever path the caller gave)."""
    return state_path(Path(root).resolve(), "run.lock")


@contextlib.contextmanager
def workspace_lock(root: Path, timeout: float = 0) -> Iterator[None]:
    """Hold `.raincheck/run.lock` so two pipeline runs never work in one workspace at once.

    Taken by the flow and by every `raincheck <step>` / `raincheck register`. With timeout 0 a
    second run fails at once (WorkspaceError naming the lock); a positive timeout waits that many
    seconds first. Re-entrant down the process tree: while held, $RAINCHECK_RUN_LOCK names the
    lock, so the stages the holder runs (a flow's `dvc repro` -> `raincheck train`) go ahead.
    """
    import os

    path = lock_path(root)
    if os.environ.get(LOCK_ENV) == str(path):
        yield  # this process or its parent holds it
        return
    with held_lock(path, timeout, lambda path: WorkspaceError(
            f"another raincheck run holds {path} in this workspace (a flow or a step); wait for it to finish")):
        previous = os.environ.get(LOCK_ENV)
        os.environ[LOCK_ENV] = str(path)
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(LOCK_ENV, None)
            else:
                os.environ[LOCK_ENV] = previous


def print_summary(root: Path, params_file: str, result: dict) -> None:
    """The end-of-run summary: metrics table, registry state, where to look next."""
    from pipeline.config import load_params
    from pipeline.reporting import metrics_table, registration_lines

    params = load_params(Path(root) / params_file)
    paths = params.paths
    print("\n" + "=" * 72)
    print("raincheck: pipeline finished\n")
    print(metrics_table(result["metrics"]))
    print()
    for line in registration_lines(result["registration"]):
        print(line)
    uri = result["registration"].get("tracking_uri", "")
    print("\nLook further:")
    print(f"  mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")
    print("  dvc metrics show          # every stage's metrics; `dvc metrics diff` after a change")
    print("  dvc plots show            # training curves and per-image scatter (HTML)")
    print(f"  report: {paths.evaluation}/{layout.REPORT}   curation: {paths.curated}/{layout.REPORT}   rain: {paths.suites}/{layout.GALLERY}")
    print(f"  gate decision: {paths.registry}/{layout.DECISION}")
    print("  raincheck registry show   # champion, candidates and their gate results")
    print("=" * 72)


def pool_snapshot(pool: Path) -> dict[str, str]:
    """image_id -> sha256 of every photo in the pool's manifest (empty when there is no pool)."""
    from pipeline.io import read_csv

    manifest = Path(pool) / layout.MANIFEST
    return {row["image_id"]: row["sha256"] for row in read_csv(manifest)} if manifest.is_file() else {}


def pool_change(before: dict[str, str], after: dict[str, str]) -> dict:
    """What a pool refresh changed: added/removed image ids and counts."""
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    return {"images": len(after), "added": added, "removed": removed, "changed": bool(added or removed)}


def commit_to_branch(root: Path, branch: str, message: str, files: tuple[str, ...] = (layout.DVC_LOCK, layout.POOL_DVC, layout.PARAMS)) -> str:
    """Commit `files` as they are now onto `branch` without touching the checkout or the index.

    Uses a private index (GIT_INDEX_FILE) seeded from the branch tip (or HEAD for a new branch),
    so a scheduled run leaves a reviewable history while the user's own work stays as it was.
    Returns the new commit id.
    """
    import os
    import tempfile

    root = Path(root)

    def git(*args: str, env: dict | None = None) -> str:
        return subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True, check=True).stdout.strip()

    ref = f"refs/heads/{branch}"
    exists = subprocess.run(["git", "show-ref", "--verify", "--quiet", ref], cwd=root).returncode == 0
    parent = git("rev-parse", ref if exists else "HEAD")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git("read-tree", parent, env=env)
        present = [f for f in files if (root / f).exists()]
        git("add", "--", *present, env=env)
        tree = git("write-tree", env=env)
        if tree == git("rev-parse", f"{parent}^{{tree}}"):
            return parent  # nothing changed since the branch tip
        commit = git("commit-tree", tree, "-p", parent, "-m", message, env=env)
    git("update-ref", ref, commit)
    return commit


def notify(event: str, payload: dict) -> bool:
    """POST {event, ...payload} as JSON to $RAINCHECK_NOTIFY_URL (off when unset). Never raises."""
    import json
    import os
    import urllib.request

    url = os.environ.get("RAINCHECK_NOTIFY_URL")
    if not url:
        return False
    request = urllib.request.Request(url, data=json.dumps({"event": event, **payload}).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10):
            return True
    except OSError as error:
        print(f"[raincheck] notification to {url} failed: {error}", file=sys.stderr)
        return False
