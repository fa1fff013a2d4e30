"""Where the pool's photos come from: one configured source -> its packages, one at a time.

Each configured source becomes :class:`Package` records (one per registry package, one per
folder) listing the :class:`Candidate` files that should hold a photo, with their provenance
(package.py). PyPI wheels (pypi.py) and Debian packages (debian.py) hold known photos: which
files are photos, and their licences, follows ../shared/design/data.md; the other images in
those packages are illustrations, icons or test charts. A folder (folders.py) is the user's own.

Downloads go to ``pipeline.runtime.cache_dir()`` (``pypi/``, ``debian/``). A package already in
the cache is used as is, without asking the index, so re-running ingestion reads the same bytes;
delete the cache to pick up newer package versions.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterator

from pipeline.config import DebianSource, FolderSource, PypiSource
from pipeline.ingestion.debian import debian_packages
from pipeline.ingestion.folders import walk_folder
from pipeline.ingestion.package import Candidate, Package
from pipeline.ingestion.pypi import pypi_packages


def iter_packages(
    source: PypiSource | DebianSource | FolderSource, root: Path, cache: Path, key: str = "ingest.sources"
) -> Iterator[Package]:
    """Fetch and open each package of one configured source, one at a time.

    A package's candidates can be read until the iterator moves on (its files live in a temporary
    directory or an open archive until then). `key` names the source in error messages.
    """
    if isinstance(source, PypiSource):
        yield from pypi_packages(source, cache)
    elif isinstance(source, DebianSource):
        yield from debian_packages(source, cache)
    else:
        yield _folder_package(source, root, key)


def _folder_package(source: FolderSource, root: Path, key: str) -> Package:
    """The user's folder as one Package: every readable file a candidate, the rest refused."""
    folder = Path(source.path).expanduser()
    folder = folder if folder.is_absolute() else root / folder
    if not folder.is_dir():
        raise FileNotFoundError(f"{key}.path: {folder} is not a folder of photos")
    files, refused = walk_folder(folder)  # every entry not listed in `files` is in `refused`
    candidates = [
        Candidate(member, source.licence, functools.partial(path.read_bytes), size=size)
        for member, path, size in files
    ]
    return Package("folder", folder.name, candidates=candidates, refused=refused)
