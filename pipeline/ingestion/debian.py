"""Photos inside Debian packages: which members are photos (DebianRule), their licences from the
package's copyright file, and the .deb cache filled by `apt-get download`.

A .deb already in the cache folder is used as is, so re-running ingestion reads the same bytes.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from pipeline.config import DebianSource
from pipeline.ingestion.archives import safe_extract
from pipeline.ingestion.package import Candidate, FetchError, Package, last_line


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


def debian_packages(source: DebianSource, cache: Path) -> Iterator[Package]:
    """One Package per Debian package of `source`, its wanted members extracted to a temporary folder."""
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
                raise FetchError(f"apt-get download {name} failed: {last_line(result.stderr)}")
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
        raise FetchError(f"{deb} is not a readable .deb (delete it from the cache): {last_line(result.stderr)}")
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
