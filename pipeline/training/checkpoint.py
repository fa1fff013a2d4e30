"""Resumable training state: atomic checkpoint files, `weights_only` loads, refusal of mismatches.

A run's *fingerprint* is a JSON-able dict of everything that decides its result (its params
section, the seed, digests of its input files). A checkpoint is resumed only when the stored
fingerprint equals the current one; otherwise the error lists what changed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.io import atomic_path

STATE_FORMAT = "raincheck-train-state/1"


class ResumeError(ValueError):
    """An interrupted run's checkpoint that must not be resumed; the message says why and what to do."""


def file_digest(path: Path | str, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes."""
    sha = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            sha.update(block)
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


def load_state(path: Path | str, fingerprint: dict) -> dict | None:
    """The saved state of an interrupted run with this fingerprint; None when there is none.

    Raises ResumeError for an unreadable file or one written with other settings or inputs.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt, truncated or foreign: torch raises several types
        raise ResumeError(f"{path}: unreadable training checkpoint ({error}); delete it to start over") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ResumeError(f"{path}: not a raincheck training checkpoint; delete it to start over")
    changed = differences(state["fingerprint"], json.loads(json.dumps(fingerprint)))
    if changed:
        raise ResumeError(
            f"{path}: refusing to resume an interrupted run whose settings or inputs differ from now:\n  "
            + "\n  ".join(changed)
            + f"\nResuming would mix two different runs. Restore those settings to resume, or delete {path} to start over."
        )
    return state
