"""Ingest edges a user hits (issue 14): every skipped entry has a reason in rejected.csv, links
never lead out of the source folder, big files are refused unread, 32-bit integer TIFFs are not
taken for 16-bit, a killed ingest's temporary folder is cleaned up, and dedupe keeps the lossless
original over its JPEG copy."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.config import parse_params
from pipeline.curation.checks import DataCheckError
from pipeline.curation.curate import run_curate
from pipeline.ingestion.decode import DecodeError, decode_photo
from pipeline.ingestion.ingest import run_ingest
from pipeline.io import read_csv
from tests.conftest import REPO, textured_photo
from tests.data.test_dedupe import random_scene
from tests.workspaces import child_env


def make_params(root: Path, folder: Path, **ingest):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["paths"] = {**raw["paths"], "pool": str(root / "data"), "curated": str(root / "curated")}
    raw["ingest"] = {"sources": [{"type": "folder", "path": str(folder)}], "short_side": 96, "min_images": 1, **ingest}
    return raw


def photo_png(path: Path, seed: int) -> None:
    Image.fromarray(textured_photo(np.random.default_rng(seed), 80, 100)).save(path)


def rejected(root: Path) -> dict[str, str]:
    return {row["member"]: row["reason"] for row in read_csv(root / "data" / "rejected.csv")}


def test_every_skipped_entry_is_reported_and_links_stay_inside(tmp_path: Path):
    folder, outside = tmp_path / "photos", tmp_path / "outside"
    (folder / "sub").mkdir(parents=True)
    outside.mkdir()
    photo_png(folder / "a.png", 1)
    photo_png(outside / "secret.png", 2)  # a real photo, but not in the source folder
    (folder / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (folder / "dangling.png").symlink_to(tmp_path / "gone.png")
    (folder / "y.png").symlink_to(outside / "secret.png")
    (folder / "etc.png").symlink_to("/etc/passwd")
    (folder / "linked_dir").symlink_to(folder / "sub", target_is_directory=True)
    (folder / "copy.png").symlink_to(folder / "a.png")  # inside the folder: read, an exact copy
    os.mkfifo(folder / "pipe.jpg")  # opening it would block the ingest forever

    summary = run_ingest(parse_params(make_params(tmp_path, folder)), tmp_path)

    reasons = rejected(tmp_path)
    assert reasons["photos/logo.svg"].startswith("unsupported file type '.svg': photos are ")
    assert reasons["photos/dangling.png"].startswith("dangling symlink")
    assert reasons["photos/y.png"] == f"symlink points outside the source folder (-> {outside / 'secret.png'}): not followed"
    assert reasons["photos/etc.png"] == "symlink points outside the source folder (-> /etc/passwd): not followed"
    assert reasons["photos/linked_dir"].startswith("symlinked folder: not followed")
    assert reasons["photos/pipe.jpg"].startswith("not a regular file (FIFO")
    assert reasons["photos/copy.png"].startswith("duplicate: same bytes as folder-")
    assert len(reasons) == 7 and summary["images"] == 1
    assert [row["member"] for row in read_csv(tmp_path / "data" / "manifest.csv")] == ["a.png"]


def _ingest_peak_mb(root: Path) -> int:
    """Run `raincheck ingest` in `root` as a user does; the child's own peak RSS in MB."""
    script = ("import resource, sys\nfrom pipeline.cli import main\ncode = main(['ingest', '--root', sys.argv[1]])\n"
              "print('peak_mb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\nsys.exit(code)")
    result = subprocess.run([sys.executable, "-c", script, str(root)], cwd=root, env=child_env(REPO),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout.split("peak_mb")[-1])


def test_a_file_over_max_file_bytes_is_refused_without_being_read(tmp_path: Path):
    """Peak memory with a 3 GB file in the folder against the same ingest without it (the baseline
    is the interpreter plus the imports, which vary by machine): reading the file would add 3 GB."""
    runs = {}
    for name, huge in (("baseline", False), ("huge", True)):
        root = tmp_path / name
        folder = root / "photos"
        folder.mkdir(parents=True)
        photo_png(folder / "a.png", 1)
        if huge:
            with (folder / "huge.jpg").open("wb") as handle:
                handle.truncate(3 * 2**30)  # 3 GB, sparse: reading it would take 3 GB of memory
        (root / "params.yaml").write_text(yaml.safe_dump(make_params(root, folder, max_file_bytes=200_000_000)))
        runs[name] = _ingest_peak_mb(root)
    assert runs["huge"] < runs["baseline"] + 512, runs
    assert rejected(tmp_path / "huge")["photos/huge.jpg"] == (
        f"too large: {3 * 2**30} bytes > ingest.max_file_bytes=200000000 (not read)")


def test_32_bit_integer_tiff_is_rejected_not_clipped(tmp_path: Path):
    values = np.linspace(0, 2**31 - 1, 64 * 80).reshape(64, 80).astype(np.int32)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="TIFF")
    with pytest.raises(DecodeError, match=r"^32-bit integer pixels \(TIFF\): value range unknown; save as 8 or 16 bit$"):
        decode_photo(buffer.getvalue(), max_pixels=10**6, short_side=512)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "deep.tif").write_bytes(buffer.getvalue())
    ramp = np.tile(np.linspace(0, 65535, 80).astype(np.uint16), (64, 1))
    Image.fromarray(ramp).save(folder / "ramp16.tif")  # 16-bit TIFF: still scaled, kept
    run_ingest(parse_params(make_params(tmp_path, folder)), tmp_path)
    assert rejected(tmp_path) == {"photos/deep.tif": "32-bit integer pixels (TIFF): value range unknown; save as 8 or 16 bit"}
    assert [row["member"] for row in read_csv(tmp_path / "data" / "manifest.csv")] == ["ramp16.tif"]


def test_a_killed_ingest_leaves_no_temporary_folder_after_the_next_run(tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    photo_png(folder / "a.png", 1)
    # What a killed run leaves: atomic_path's temporary sibling with a half-built pool inside.
    stale = Path(tempfile.mkdtemp(prefix=".data.", dir=tmp_path))
    (stale / "data" / "images").mkdir(parents=True)
    (stale / "data" / "images" / "half.png").write_bytes(b"\x89PNG half written")
    mine = tmp_path / ".data.notes"  # a user's own folder that only looks similar: kept
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")

    run_ingest(parse_params(make_params(tmp_path, folder)), tmp_path)

    assert not stale.exists()
    assert (mine / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".data")) == [".data.notes"]


def test_dedupe_keeps_the_lossless_original_over_its_jpeg(tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(11):
        Image.fromarray(random_scene(20 + i, 96, 128)).save(folder / f"other_{i:02d}.png")
    original = random_scene(5, 96, 128)
    Image.fromarray(original).save(folder / "scene.png")
    # Pick the JPEG quality whose image id sorts before the PNG's: the old tie-break (smallest
    # id) then kept the JPEG.
    params = parse_params({**make_params(tmp_path, folder, short_side=96),
                           "curate": {**yaml.safe_load((REPO / "params.yaml").read_text())["curate"],
                                      "patch_size": 32, "patch_stride": 32, "eval_size": 64, "eval_crops": 1,
                                      "checks": {"min_train_photos": 1, "min_val_photos": 1, "min_test_photos": 1,
                                                 "min_train_patches": 1, "min_complexity_bins": 1}},
                           "train": {**yaml.safe_load((REPO / "params.yaml").read_text())["train"], "crop_size": 32}})
    for quality, subsampling in [(q, s) for q in range(97, 85, -1) for s in (0, 2)]:
        buffer = io.BytesIO()
        Image.fromarray(original).save(buffer, format="JPEG", quality=quality, subsampling=subsampling)
        (folder / "scene.jpg").write_bytes(buffer.getvalue())
        run_ingest(params, tmp_path)
        ids = {row["member"]: row["image_id"] for row in read_csv(tmp_path / "data" / "manifest.csv")}
        if ids["scene.jpg"] < ids["scene.png"]:
            break
    assert ids["scene.jpg"] < ids["scene.png"]
    try:
        run_curate(params, tmp_path)
    except DataCheckError:
        pass  # removed.csv is written before the gates; only dedupe is under test here
    removed = {row["image_id"]: row for row in read_csv(tmp_path / "curated" / "removed.csv")}
    assert removed[ids["scene.jpg"]]["duplicate_of"] == ids["scene.png"]
    assert ids["scene.png"] not in removed
    assert json.loads((tmp_path / "curated" / "summary.json").read_text())["duplicates_removed"] == 1
