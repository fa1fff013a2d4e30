"""Photos inside PyPI wheels: which members are photos and their licences, and the wheel cache.

A wheel already in the cache folder is used as is, without asking the index, so re-running
ingestion reads the same bytes; delete the cache to pick up newer versions.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator

from pipeline.config import PypiSource
from pipeline.ingestion.package import Candidate, FetchError, Package, last_line

# Photos inside PyPI wheels: member -> licence (from each package's data README / docstrings).
PYPI_PHOTOS: dict[str, dict[str, str]] = {
    "scikit-image": {
        "skimage/data/astronaut.png": "public domain (NASA)",
        "skimage/data/chelsea.png": "CC0-1.0",
        "skimage/data/coffee.png": "CC0-1.0",
        "skimage/data/hubble_deep_field.jpg": "public domain (NASA)",
        # motorcycle_right.png is left out: the other view of this stereo pair is the same scene,
        # and the two could land in different splits.
        "skimage/data/motorcycle_left.png": "Middlebury 2014 stereo dataset (redistributed by scikit-image)",
        "skimage/data/rocket.jpg": "public domain (SpaceX)",
    },
    "scikit-learn": {
        "sklearn/datasets/images/china.jpg": "CC-BY-2.0",
        "sklearn/datasets/images/flower.jpg": "CC-BY-2.0",
    },
    "sporco": {
        "sporco/data/barbara.png": "freely redistributable (see sporco/data/README.rst)",
        "sporco/data/kodim23.png": "Kodak: released for unrestricted use",
        "sporco/data/monarch.png": "Waterloo BragZone: free of copyright restrictions",
        "sporco/data/sail.png": "Waterloo BragZone: free of copyright restrictions",
        "sporco/data/tulips.png": "Waterloo BragZone: free of copyright restrictions",
    },
}
# The wheel's notices copied to licences/<package>.copyright: its licence files and data README.
PYPI_NOTICE = re.compile(
    r"[^/]+\.dist-info/(licenses/)?(LICEN[CS]E|COPYING)[^/]*"
    r"|skimage/data/README\.txt|sklearn/datasets/images/README\.txt|sporco/data/README\.rst"
)


def pypi_packages(source: PypiSource, cache: Path) -> Iterator[Package]:
    """One Package per wheel of `source`, its photos read from the open wheel."""
    for name in source.packages:
        try:
            wheel = fetch_wheel(name, cache / "pypi")
        except FetchError as error:
            yield Package("pypi", name, error=str(error))
            continue
        version = wheel.name.split("-")[1]
        with zipfile.ZipFile(wheel) as archive:
            members = set(archive.namelist())
            photos = PYPI_PHOTOS[name]
            notices = sorted(member for member in members if PYPI_NOTICE.fullmatch(member))
            notice = "".join(
                f"==> {member} <==\n{archive.read(member).decode('utf-8', 'replace')}\n" for member in notices
            )
            candidates = [
                Candidate(member, photos[member], functools.partial(archive.read, member),
                          size=archive.getinfo(member).file_size)
                for member in sorted(members & photos.keys())
            ]
            yield Package("pypi", name, version, candidates, notice or None)


def fetch_wheel(name: str, folder: Path) -> Path:
    """The cached wheel of `name` (newest version if several), else `pip download` it into `folder`."""
    cached = _cached_wheels(name, folder)
    if cached:
        return cached[-1]
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        # Download to a temporary folder first so an interrupted download never enters the cache.
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--quiet", "-d", tmp, name]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise FetchError(f"pip download {name} failed: {last_line(result.stderr)}")
        for wheel in Path(tmp).glob("*.whl"):
            os.replace(wheel, folder / wheel.name)
    cached = _cached_wheels(name, folder)
    if not cached:
        raise FetchError(f"pip download {name} produced no wheel in {folder}")
    return cached[-1]


def _cached_wheels(name: str, folder: Path) -> list[Path]:
    """Cached wheels of `name`, oldest version first."""
    from packaging.version import InvalidVersion, Version

    def version(wheel: Path) -> tuple:
        try:
            return (1, Version(wheel.name.split("-")[1]))
        except InvalidVersion:
            return (0, wheel.name)

    stem = re.sub(r"[-_.]+", "_", name).lower() + "-"  # wheel file names use the normalised name
    wheels = [path for path in folder.glob("*.whl") if path.name.lower().startswith(stem)]
    return sorted(wheels, key=version)
