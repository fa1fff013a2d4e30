"""Resumable training state: atomic checkpoint files, `weights_only` loads, refusal of mismatches.

A run's *fingerprint* is a JSON-able dict of everything that decides its result (its params
section, the seed, digests of its input files and of the step's code). A checkpoint is resumed
only when the stored fingerprint equals the current one. Any other checkpoint is stale (left by a
run of other settings, inputs or code, e.g. when DVC restored the stage from its run cache instead
of re-running it): it is deleted with a note on stderr saying what differed, and the step starts
from step 0, as DVC expects a stage to.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from pipeline.io import atomic_path
from pipeline.lineage import file_sha256

STATE_FORMAT = "raincheck-train-state/1"


# sha256 (hex) of a file's bytes: the one helper is pipeline.lineage.file_sha256; train.py and
# prior.py know it by this name.
file_digest = file_sha256


def code_digest(*sources: Path | str) -> str:
    """sha256 (hex) over the `.py` files of `sources` (files or folders), path and bytes, in sorted
    order: a checkpoint written by other code is not resumed."""
    sha = hashlib.sha256()
    files = []
    for source in map(Path, sources):
        files.extend(sorted(source.rglob("*.py")) if source.is_dir() else [source])
    for path in files:
        sha.update(f"{path.parent.name}/{path.name}\0".encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()


def _flatten(obj: object, prefix: str = "") -> dict[str, object]:
    if isinstance(obj, dict):
        flat: dict[str, object] = {}
        for key, value in obj.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: obj}


def differences(stored: dict, current: dict) -> list[str]:
    """Human-readable lines `key: stored -> current` for every flattened key that differs."""
    old, new = _flatten(stored), _flatten(current)
    return [f"{key}: {old.get(key, '(absent)')!r} in the checkpoint, {new.get(key, '(absent)')!r} now"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def save_state(path: Path | str, fingerprint: dict, step: int, state: dict) -> None:
    """Write the training state atomically (a kill mid-write leaves the previous checkpoint intact)."""
    import torch

    # JSON round trip: the fingerprint holds only plain types, which weights_only loads accept.
    payload = {"format": STATE_FORMAT, "fingerprint": json.loads(json.dumps(fingerprint)), "step": step, **state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def discard(path: Path, reason: str) -> None:
    """Delete a stale checkpoint, saying why on stderr (one line per difference)."""
    print(f"[raincheck] {path}: discarded a stale training checkpoint ({reason}); starting from step 0", file=sys.stderr)
    path.unlink(missing_ok=True)


def load_state(path: Path | str, fingerprint: dict) -> dict | None:
    """The saved state of an interrupted run with this fingerprint; None when there is none.

    A checkpoint that is unreadable, foreign, or written with other settings, inputs or code is
    stale: it is deleted (with a note) and None returned, so the step starts over.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt, truncated or foreign: torch raises several types
        discard(path, f"unreadable: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
        return None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        discard(path, "not a raincheck training checkpoint")
        return None
    changed = differences(state["fingerprint"], json.loads(json.dumps(fingerprint)))
    if changed:
        # Resuming would mix two different runs; DVC re-ran the stage for the current settings.
        discard(path, "written with other settings, inputs or code: " + "; ".join(changed))
        return None
    return state
