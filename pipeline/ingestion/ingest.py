"""Ingestion step: build the raw background pool `{pool}/` from the sources in params.ingest.

Writes (docs/dataflow.md): images/<image_id>.png (uint8 RGB, short side <= ingest.short_side),
manifest.csv (one row per photo, sorted by image_id), rejected.csv (source, member, reason) and
licences/<package>.copyright.

- Streaming: photos are read, decoded, scaled and written one at a time, so memory does not grow
  with the pool.
- Reproducible: the pool is a function of the source bytes only (deterministic PNG encoding,
  sorted tables, no timestamps), so the same sources give a byte-identical pool and data.dvc
  changes only when the photos do.
- Atomic: the pool is built in a temporary sibling directory (`.data.<8 random characters>/`) and renamed
  into place; a failed run leaves the previous pool untouched. A killed run cannot remove its
  temporary folder: the next run does (it holds `.raincheck/ingest.lock`, so no other ingest of
  this workspace is building one).
- Bad files are skipped and listed with the reason (files larger than ingest.max_file_bytes
  without being read); the run fails only when fewer than ingest.min_images photos remain, or a
  source marked `required` cannot be fetched.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from pipeline import layout
from pipeline.config import Ingest, Params
from pipeline.ingestion.archives import largest_jpeg
from pipeline.ingestion.decode import DecodeError, decode_photo
from pipeline.ingestion.package import Candidate, Package
from pipeline.ingestion.sources import iter_packages
from pipeline.io import atomic_path, save_png, write_csv
from pipeline.runtime import cache_dir, held_lock, state_path

MANIFEST_COLUMNS = [
    "image_id", "source", "package", "version", "member", "licence",
    "sha256", "width", "height", "orig_width", "orig_height",
]
REJECTED_COLUMNS = ["source", "member", "reason"]


class IngestError(RuntimeError):
    """Ingestion cannot produce a usable pool; the message says why and which params key to change."""


def run_ingest(params: Params, root: Path) -> dict:
    """Build `{pool}/` from params.ingest; returns a summary (per-package counts, rejects, timing).

    Raises IngestError when fewer than ingest.min_images photos are usable or a required source
    is unavailable, and FileNotFoundError for a folder source that does not exist.
    """
    settings = params.ingest
    root = Path(root)
    pool = root / params.paths.pool
    started = time.perf_counter()
    rows: list[dict] = []
    rejected: list[dict] = []
    packages: dict[str, dict] = {}
    unavailable: dict[str, str] = {}
    seen: dict[str, str] = {}  # sha256 -> image_id, to skip exact copies

    with _ingest_lock(root), atomic_path(pool) as building:
        _remove_stale_builds(pool, current=building.parent)
        (building / "images").mkdir(parents=True)
        for index, source in enumerate(settings.sources):
            key = f"ingest.sources[{index}]"
            for package in iter_packages(source, root, cache_dir(), key=key):
                label = f"{package.source}/{package.package}"
                if package.error:
                    if getattr(source, "required", False):
                        raise IngestError(f"{key} ({label}) is required but unavailable: {package.error}")
                    unavailable[label] = package.error
                    continue
                packages[label] = _ingest_package(package, label, settings, building, seen, rows, rejected)
        if len(rows) < settings.min_images:
            raise IngestError(_too_few_message(len(rows), settings.min_images, rejected, unavailable))
        write_csv(building / layout.MANIFEST, sorted(rows, key=lambda row: row["image_id"]), MANIFEST_COLUMNS)
        write_csv(building / layout.REJECTED, sorted(rejected, key=lambda row: tuple(row.values())), REJECTED_COLUMNS)

    seconds = time.perf_counter() - started
    return {
        "pool": str(pool),
        "images": len(rows),
        "rejected": len(rejected),
        "rejected_reasons": dict(Counter(row["reason"].split(":")[0] for row in rejected)),
        "sources": packages,
        "unavailable": unavailable,
        "pool_mb": round(sum(f.stat().st_size for f in pool.rglob("*") if f.is_file()) / 2**20, 1),
        "seconds": round(seconds, 1),
        "images_per_s": round(len(rows) / seconds, 2) if seconds > 0 else None,
    }


def _ingest_package(package: Package, label: str, settings: Ingest, building: Path, seen: dict,
                    rows: list[dict], rejected: list[dict]) -> dict:
    """Store one available package's photos under `building`/images (rows and rejections appended
    in place, `seen` deduplicating exact copies across packages); returns its summary counts."""
    from tqdm import tqdm

    if package.copyright:
        licences = building / "licences"
        licences.mkdir(exist_ok=True)
        (licences / f"{package.package}.copyright").write_text(package.copyright, encoding="utf-8")
    for member, reason in package.refused:
        rejected.append(_rejection(package, member, reason))
    kept = 0
    for candidate in tqdm(package.candidates, desc=label, unit="photo", file=sys.stderr, leave=False):
        try:
            rows.append(_ingest_one(candidate, package, settings, building / "images", seen))
            kept += 1
        except DecodeError as error:
            rejected.append(_rejection(package, candidate.member, str(error)))
    return {"version": package.version, "found": len(package.candidates), "kept": kept,
            "rejected": len(package.candidates) - kept}


def _ingest_one(candidate: Candidate, package: Package, settings: Ingest, images: Path, seen: dict) -> dict:
    """Read, decode, scale and store one photo; returns its manifest row (raises DecodeError)."""
    if candidate.size is not None and candidate.size > settings.max_file_bytes:
        # Checked before reading: a 3 GB file named .jpg must not be read whole into memory.
        raise DecodeError(f"too large: {candidate.size} bytes > ingest.max_file_bytes={settings.max_file_bytes} (not read)")
    try:
        data = candidate.read()
    except OSError as error:
        raise DecodeError(f"unreadable: {error}") from None
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 in seen:
        raise DecodeError(f"duplicate: same bytes as {seen[sha256]}")
    image_id = f"{package.source}-{sha256[:12]}"
    if candidate.eet:
        try:
            data = largest_jpeg(data, settings.max_pixels)
        except ValueError as error:
            raise DecodeError(str(error)) from None
    decoded = decode_photo(data, max_pixels=settings.max_pixels, short_side=settings.short_side)
    save_png(images / f"{image_id}.png", decoded.image)
    seen[sha256] = image_id
    height, width = decoded.image.shape[:2]
    return {
        "image_id": image_id,
        "source": package.source,
        "package": package.package,
        "version": package.version,
        "member": candidate.member,
        "licence": candidate.licence,
        "sha256": sha256,
        "width": width,
        "height": height,
        "orig_width": decoded.orig_width,
        "orig_height": decoded.orig_height,
    }


def _ingest_lock(root: Path) -> contextlib.AbstractContextManager[None]:
    """Hold `<root>/.raincheck/ingest.lock`: one ingest per workspace builds at a time."""
    return held_lock(state_path(root, "ingest.lock"), 0,
                     lambda path: IngestError(f"another ingest holds {path} in this workspace; wait for it to finish"))


def _remove_stale_builds(pool: Path, current: Path) -> list[Path]:
    """Delete the temporary build folders a killed ingest left beside `pool`; returns them.

    Only folders named like atomic_path's (`.<pool>.` + 8 characters of tempfile.mkdtemp) that
    hold nothing but a `<pool>` folder are removed, so a user's own `.data.something` stays.
    """
    pattern = re.compile(rf"\.{re.escape(pool.name)}\.[a-z0-9_]{{8}}")
    removed = []
    for folder in pool.parent.iterdir():
        if folder == current or not pattern.fullmatch(folder.name) or folder.is_symlink() or not folder.is_dir():
            continue
        if {child.name for child in folder.iterdir()} <= {pool.name}:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        print(f"[raincheck] removed {len(removed)} temporary folder(s) left by an interrupted ingest: "
              f"{', '.join(f.name for f in removed)}", file=sys.stderr)
    return removed


def _rejection(package: Package, member: str, reason: str) -> dict:
    # rejected.csv has no package column: the member is prefixed with the package (or folder) name.
    return {"source": package.source, "member": f"{package.package}/{member}", "reason": reason}


def _too_few_message(kept: int, needed: int, rejected: list[dict], unavailable: dict[str, str]) -> str:
    lines = [
        f"only {kept} usable photos, but ingest.min_images={needed}: add sources (e.g. a folder of "
        f"your own photos) or lower ingest.min_images. The previous pool was left untouched."
    ]
    lines += [f"  unavailable {label}: {reason}" for label, reason in sorted(unavailable.items())]
    lines += [f"  rejected {row['member']}: {row['reason']}" for row in rejected[:10]]
    if len(rejected) > 10:
        lines.append(f"  ... and {len(rejected) - 10} more rejected files")
    return "\n".join(lines)
