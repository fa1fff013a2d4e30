"""Files out of containers, safely: tar members never written outside their folder, and the
photo inside an Enlightenment EET container (the largest embedded JPEG that decodes)."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path, PurePosixPath
from typing import Callable


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
