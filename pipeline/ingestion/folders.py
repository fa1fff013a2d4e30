"""A user's folder of photos as an ingest source: every entry is either a candidate or refused.

The folder is walked without following links out of it: nothing is skipped silently. Each
entry that is not read gets a (member, reason) pair for rejected.csv:

- a suffix that is not a photo format (`.svg`, `.txt`, ...): "unsupported file type";
- a symbolic link whose target does not exist: "dangling symlink";
- a link whose target lies outside the folder (`y.png -> /etc/passwd`): never read;
- a link to a folder: not followed (it could loop or lead anywhere);
- a FIFO, socket or device: opening a FIFO would block the ingest forever;
- a folder that cannot be listed.

A link to a regular file inside the folder is read like the file itself (its bytes are then an
exact copy, which ingest rejects as a duplicate).
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.io import IMAGE_SUFFIXES



def walk_folder(folder: Path) -> tuple[list[tuple[str, Path, int]], list[tuple[str, str]]]:
    """Photos under `folder`, recursively: ([(member, path, size in bytes)], [(member, reason)]).

    `member` is the entry's path relative to `folder` (POSIX); both lists are sorted by member.
    Sizes come from the file system (os.stat of the target), so nothing is read here.
    """
    folder = Path(folder)
    real_root = Path(os.path.realpath(folder))
    files: list[tuple[str, Path, int]] = []
    refused: list[tuple[str, str]] = []
    pending = [folder]
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as error:
            refused.append((_member(folder, Path(directory)) + "/", f"unreadable folder: {error.strerror or error}"))
            continue
        for entry in entries:
            path = Path(entry.path)
            member = _member(folder, path)
            if entry.is_symlink():
                outcome = _link(path, real_root)
                if isinstance(outcome, str):
                    refused.append((member, outcome))
                    continue
                size = outcome
            elif entry.is_dir(follow_symlinks=False):
                pending.append(path)
                continue
            elif entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
            else:
                refused.append((member, "not a regular file (FIFO, socket or device): not read"))
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                allowed = " ".join(IMAGE_SUFFIXES)
                refused.append((member, f"unsupported file type {path.suffix.lower() or '(no suffix)'!r}: photos are {allowed}"))
                continue
            files.append((member, path, size))
    return sorted(files), sorted(refused)


def _link(path: Path, real_root: Path) -> int | str:
    """The size of the regular file a link inside the folder points to, or why it is refused."""
    target = Path(os.path.realpath(path))
    if not target.exists():
        return f"dangling symlink (-> {os.readlink(path)}): nothing to read"
    if target != real_root and real_root not in target.parents:
        return f"symlink points outside the source folder (-> {target}): not followed"
    if target.is_dir():
        return "symlinked folder: not followed (links to folders can loop)"
    if not target.is_file():
        return "symlink to a FIFO, socket or device: not read"
    return target.stat().st_size


def _member(folder: Path, path: Path) -> str:
    relative = path.relative_to(folder).as_posix()
    return relative if relative != "." else "."

