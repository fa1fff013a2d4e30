"""What every source yields: :class:`Package` records listing the :class:`Candidate` files that
should hold a photo, with their provenance; :class:`FetchError` for a package that cannot be had."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


class FetchError(RuntimeError):
    """A package that cannot be fetched or read on this machine (no apt-get, no network, bad file)."""


@dataclass(frozen=True)
class Candidate:
    """A file that should hold a photo. `read()` returns the original file's bytes."""

    member: str  # path inside the package, or relative to the folder
    licence: str
    read: Callable[[], bytes]
    eet: bool = False  # an EET container: the photo is the largest JPEG inside (largest_jpeg)
    size: int | None = None  # bytes, known before reading (file system or archive index)


@dataclass
class Package:
    """One registry package (or folder) of a source, ready to be read."""

    source: str  # "pypi" | "debian" | "folder"
    package: str
    version: str = ""
    candidates: list[Candidate] = field(default_factory=list)
    copyright: str | None = None  # text for licences/<package>.copyright
    refused: list[tuple[str, str]] = field(default_factory=list)  # (member, reason): unsafe members
    error: str | None = None  # why it could not be fetched; then it has no candidates


def last_line(text: str) -> str:
    """The last non-blank line of a tool's output (for an error message)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"
