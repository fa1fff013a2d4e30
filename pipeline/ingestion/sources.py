"""Where the pool's photos come from: PyPI wheels, Debian packages and the user's own folders.

Each configured source becomes :class:`Package` records (one per registry package, one per
folder) listing the :class:`Candidate` files that should hold a photo, with their provenance.
Which files are photos, and their licences, follows ../shared/design/data.md; the other images
in those packages are illustrations, icons or test charts.

Downloads go to ``pipeline.runtime.cache_dir()`` (``pypi/``, ``debian/``). A package already in
the cache is used as is, without asking the index, so re-running ingestion reads the same bytes;
delete the cache to pick up newer package versions.
"""

from __future__ import annotations

import functools
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from pipeline.config import DebianSource, FolderSource, PypiSource
from pipeline.ingestion.folders import walk_folder


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


@dataclass(frozen=True)
class DebianRule:
    """Which members of a Debian package are photos, and their licence.

    `pattern` is matched against the whole member path (without a leading "./"). When it has a
    named group `photo`, the members sharing that group are sizes of one photo and only the
    largest (groups `w` x `h`) is kept. `licence` is the package's licence for its photos
    (data.md); a copyright-file stanza naming the file itself overrides it.
    """

    pattern: str
    licence: str
    exclude: frozenset[str] = frozenset()  # file names in the pattern that are illustrations
    eet: bool = False  # members are EET containers holding the photo as several JPEGs

    def matches(self, member: str) -> bool:
        return bool(re.fullmatch(self.pattern, member)) and PurePosixPath(member).name not in self.exclude


_PLASMA_PHOTOS = (
    "BytheWater|ColdRipple|ColorfulCups|DarkestHour|EveningGlow|FallenLeaf|Grey|Kite|OneStandsOut|Path|summer_1am"
)
_ENLIGHTENMENT_PHOTOS = (
    "Bamboo|Foggy-Trees|God-Rays|Green-Maple|Lichen-Branches|Mountain|Peaks|Red-Maple|"
    "Sea-of-Lanterns|Snow-Trees|Spruce-Needles|Sunset-Clouds|White-Flower|Yellow-Flower"
)
DEBIAN_RULES: dict[str, DebianRule] = {
    "plasma-workspace-wallpapers": DebianRule(
        rf"usr/share/wallpapers/(?P<photo>{_PLASMA_PHOTOS})/contents/images/(?P<w>\d+)x(?P<h>\d+)\.jpg",
        "LGPL-3.0 (wallpaper metadata.json)",
    ),
    "mate-backgrounds": DebianRule(r"usr/share/backgrounds/mate/nature/[^/]+\.jpg", "GPL-2+"),
    "lomiri-wallpapers-16.04": DebianRule(
        r"usr/share/backgrounds/[^/]+\.jpg", "CC-BY-SA-4.0", frozenset({"umang_by_Abhishek_Mudgal.jpg"})
    ),
    "lomiri-wallpapers-20.04": DebianRule(
        r"usr/share/backgrounds/[^/]+\.jpg",
        "CC-BY-SA-3.0",
        frozenset(
            {"Fossa_by_Jasper_Roks.jpg", "Infinite-Sea_by_Aury88.jpg", "Painting-Colors_by__herobrine7gamer.jpg"}
        ),
    ),
    "tuxpaint-data": DebianRule(r"usr/share/tuxpaint/templates/[^/]+\.jpg", "GPL-2+"),
    "enlightenment-data": DebianRule(
        rf"usr/share/enlightenment/data/backgrounds/({_ENLIGHTENMENT_PHOTOS})\.edj", "BSD-2-clause", eet=True
    ),
}


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


def iter_packages(
    source: PypiSource | DebianSource | FolderSource, root: Path, cache: Path, key: str = "ingest.sources"
) -> Iterator[Package]:
    """Fetch and open each package of one configured source, one at a time.

    A package's candidates can be read until the iterator moves on (its files live in a temporary
    directory or an open archive until then). `key` names the source in error messages.
    """
    if isinstance(source, PypiSource):
        yield from _pypi_packages(source, cache)
    elif isinstance(source, DebianSource):
        yield from _debian_packages(source, cache)
    else:
        yield _folder_package(source, root, key)


# ----------------------------------------------------------------------------- folders
def _folder_package(source: FolderSource, root: Path, key: str) -> Package:
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


# ----------------------------------------------------------------------------- PyPI wheels
def _pypi_packages(source: PypiSource, cache: Path) -> Iterator[Package]:
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
            raise FetchError(f"pip download {name} failed: {_last_line(result.stderr)}")
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


# ----------------------------------------------------------------------------- Debian packages
def _debian_packages(source: DebianSource, cache: Path) -> Iterator[Package]:
    fetcher = AptFetcher(cache / "debian")
    for name in source.packages:
        rule = DEBIAN_RULES[name]
        copyright_member = f"usr/share/doc/{name}/copyright"
        with tempfile.TemporaryDirectory(prefix="raincheck-deb-") as tmp:
            target = Path(tmp)
            try:
                deb = fetcher.fetch(name)
                version = deb_field(deb, "Version")
                extracted, refused = read_deb(deb, target, lambda m: m == copyright_member or rule.matches(m))
            except FetchError as error:
                yield Package("debian", name, error=str(error))
                continue
            notice = None
            if copyright_member in extracted:
                notice = (target / copyright_member).read_text(encoding="utf-8", errors="replace")
            stanzas = parse_copyright(notice or "")
            candidates = [
                Candidate(member, licence_for(member, stanzas, rule.licence),
                          functools.partial((target / member).read_bytes), rule.eet,
                          size=(target / member).stat().st_size)
                for member in keep_largest(rule, [m for m in extracted if m != copyright_member])
            ]
            yield Package("debian", name, version, candidates, notice, refused)


class AptFetcher:
    """`apt-get download` into a cache folder; runs `apt-get update` once if the lists are missing."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.updated = False

    def fetch(self, name: str) -> Path:
        cached = self.cached(name)
        if cached:
            return cached
        if shutil.which("apt-get") is None:
            raise FetchError("apt-get not found (not a Debian/Ubuntu machine): source skipped")
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            with tempfile.TemporaryDirectory(dir=self.folder, prefix=".download-") as tmp:
                # Into a temporary folder first, so a failed download never enters the cache.
                result = subprocess.run(["apt-get", "download", name], cwd=tmp, capture_output=True, text=True)
                for deb in Path(tmp).glob("*.deb") if result.returncode == 0 else ():
                    os.replace(deb, self.folder / deb.name)
            if result.returncode == 0 and self.cached(name):
                return self.cached(name)
            # A fresh image often has no package lists; as root we may fetch them once and retry.
            if self.updated or os.geteuid() != 0:
                raise FetchError(f"apt-get download {name} failed: {_last_line(result.stderr)}")
            self.updated = True
            subprocess.run(["apt-get", "update"], capture_output=True, text=True)

    def cached(self, name: str) -> Path | None:
        """The cached .deb of `name`, the newest version if there are several."""
        debs = list(self.folder.glob(f"{name}_*.deb"))
        if len(debs) > 1:
            versions = {deb: deb_field(deb, "Version") for deb in debs}
            return max(debs, key=functools.cmp_to_key(lambda a, b: _compare_debian(versions[a], versions[b])))
        return debs[0] if debs else None


def _compare_debian(a: str, b: str) -> int:
    if a == b:
        return 0
    newer = subprocess.run(["dpkg", "--compare-versions", a, "gt", b], capture_output=True).returncode == 0
    return 1 if newer else -1


def deb_field(deb: Path, name: str) -> str:
    """One control field of a .deb (`dpkg-deb -f`)."""
    if shutil.which("dpkg-deb") is None:
        raise FetchError("dpkg-deb not found: cannot read .deb packages on this machine")
    result = subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True)
    if result.returncode != 0:
        raise FetchError(f"{deb} is not a readable .deb (delete it from the cache): {_last_line(result.stderr)}")
    return result.stdout.strip()


def read_deb(
    deb: Path, target: Path, wanted: Callable[[str], bool]
) -> tuple[list[str], list[tuple[str, str]]]:
    """Extract the wanted files of a .deb's file system into `target` (see safe_extract)."""
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as process:
        try:
            with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
                result = safe_extract(archive, target, wanted)
        except tarfile.TarError as error:
            raise FetchError(f"{deb}: unreadable file system archive: {error}") from None
    if process.returncode != 0:
        raise FetchError(
            f"dpkg-deb --fsys-tarfile {deb} failed (exit {process.returncode}); delete it from the cache"
        )
    return result


def safe_extract(
    archive: tarfile.TarFile, target: Path, wanted: Callable[[str], bool]
) -> tuple[list[str], list[tuple[str, str]]]:
    """Extract the regular files `wanted(name)` accepts into `target`, never writing outside it.

    Works on streamed archives (mode "r|"). Names are normalised ("./a/b" -> "a/b"). Members with an
    absolute name or a ".." component are refused whatever their name; links and devices are
    never created (packages link other sizes of a wallpaper to one file, so links are skipped
    quietly); tarfile's "data" filter guards what is written. Returns the extracted names (in
    archive order) and the refused (name, reason) pairs.
    """
    extracted: list[str] = []
    refused: list[tuple[str, str]] = []
    for member in archive:
        path = PurePosixPath(member.name)
        if path.is_absolute():
            refused.append((member.name, "unsafe path: absolute"))
            continue
        if ".." in path.parts:
            refused.append((member.name, "unsafe path: '..' component"))
            continue
        name = path.as_posix()  # drops "./" and repeated slashes
        if not member.isfile() or not wanted(name):
            continue
        member.name = name
        try:
            archive.extract(member, target, filter="data")
        except tarfile.FilterError as error:
            refused.append((name, f"unsafe member: {error}"))
            continue
        extracted.append(name)
    return extracted, refused


def keep_largest(rule: DebianRule, members: list[str]) -> list[str]:
    """Sorted members, keeping only the largest size of each photo when the rule names sizes."""
    best: dict[str, tuple[int, str]] = {}
    for member in members:
        match = re.fullmatch(rule.pattern, member)
        if match is None:
            continue
        groups = match.groupdict()
        if "photo" not in groups:
            best[member] = (0, member)
            continue
        area = int(groups["w"]) * int(groups["h"])
        if groups["photo"] not in best or area > best[groups["photo"]][0]:
            best[groups["photo"]] = (area, member)
    return sorted(member for _, member in best.values())


# ----------------------------------------------------------------------------- licences
def parse_copyright(text: str) -> list[tuple[list[str], str]]:
    """Stanzas of a machine-readable Debian copyright file (DEP-5): (Files patterns, License name)."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:(.*(?:\n[ \t]+.*)*)", block, re.MULTILINE)
        licence = re.search(r"^License:[ \t]*(.+)$", block, re.MULTILINE)
        if files and licence:
            stanzas.append((files.group(1).split(), licence.group(1).strip()))
    return stanzas


def licence_for(member: str, stanzas: list[tuple[list[str], str]], default: str) -> str:
    """The licence of the last stanza naming this very file (by file name), else `default`.

    Wildcard stanzas ("*") cover a package's code and are not used for its photos.
    """
    name = PurePosixPath(member).name
    licence = default
    for patterns, stanza_licence in stanzas:
        if any(PurePosixPath(pattern).name == name for pattern in patterns):
            licence = stanza_licence
    return licence


# ----------------------------------------------------------------------------- EET containers
JPEG_START = b"\xff\xd8\xff"


def largest_jpeg(data: bytes, max_pixels: int) -> bytes:
    """The largest complete JPEG embedded in a container (an Enlightenment .edj), as bytes.

    EET files store each background as several plain JPEGs of different sizes. Every JPEG start
    marker is probed from its header; the largest picture (at most `max_pixels`) that decodes
    fully wins. Returns the bytes from its marker to the end of the container (decoders stop at
    the JPEG's end marker). Raises ValueError when none decodes.
    """
    from PIL import Image

    from pipeline.ingestion.decode import DECODE_ERRORS

    sizes = []
    for match in re.finditer(re.escape(JPEG_START), data):
        start = match.start()
        try:
            with Image.open(io.BytesIO(data[start : start + (1 << 20)])) as probe:
                if probe.format == "JPEG" and probe.width * probe.height <= max_pixels:
                    sizes.append((probe.width * probe.height, start))
        except DECODE_ERRORS:
            continue
    for _, start in sorted(sizes, reverse=True):
        try:
            with Image.open(io.BytesIO(data[start:])) as image:
                image.load()
            return data[start:]
        except DECODE_ERRORS:
            continue
    raise ValueError("no decodable JPEG inside the container")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"
