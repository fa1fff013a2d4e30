"""Ingestion: odd and broken files, provenance, byte-identical re-runs, safe extraction, thresholds."""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.config import ParamsError, parse_params
from pipeline.ingestion.decode import DecodeError, decode_photo
from pipeline.ingestion.ingest import MANIFEST_COLUMNS, IngestError, run_ingest
from pipeline.ingestion.archives import largest_jpeg, safe_extract
from pipeline.ingestion.debian import DEBIAN_RULES, keep_largest, licence_for, parse_copyright
from pipeline.io import load_png, read_csv
from tests.conftest import REPO, textured_photo

SHORT_SIDE = 64
RAMP16 = np.linspace(0, 65535, 60).astype(np.uint16)  # one row of the 16-bit grey test image


def make_params(pool: Path, sources: list[dict], **ingest):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["paths"]["pool"] = str(pool)
    raw["ingest"] = {"sources": sources, "short_side": SHORT_SIDE, "min_images": 1, **ingest}
    return parse_params(raw)


def jpeg_bytes(image: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95, **options)
    return buffer.getvalue()


def png16_rgb(values: np.ndarray) -> bytes:
    """A 16-bit RGB PNG written by hand (Pillow cannot write one): values uint16 (H, W, 3)."""
    height, width, _ = values.shape
    raw = b"".join(b"\x00" + values[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.fixture
def odd_folder(tmp_path: Path) -> Path:
    """A folder of 16 files: 10 usable in odd formats, 5 that must be rejected, 1 not a photo type."""
    folder = tmp_path / "odd"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(3)
    good = jpeg_bytes(textured_photo(rng, 120, 160))
    (folder / "good.jpg").write_bytes(good)
    (folder / "sub" / "good_again.jpg").write_bytes(good)  # listed after good.jpg
    Image.fromarray(textured_photo(rng, 300, 400)).save(folder / "big.png")
    Image.fromarray(textured_photo(rng, 80, 90)).save(folder / "sub" / "nested.png")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(jpeg_bytes(textured_photo(rng, 120, 160))[:3000])
    (folder / "text.jpg").write_text("this is not a photo\n")
    (folder / "notes.txt").write_text("rejected unread: not an image extension\n")
    Image.new("L", (1100, 1000)).save(folder / "huge.png")  # 1.1 M pixels > max_pixels below
    Image.fromarray(np.tile(RAMP16, (40, 1))).save(folder / "grey16.png")  # 40x60: not scaled
    (folder / "rgb16.png").write_bytes(png16_rgb(np.full((40, 50, 3), [65535, 32896, 0], np.uint16)))
    Image.fromarray(textured_photo(rng, 60, 70)[..., 0]).save(folder / "grey.png")
    palette = Image.fromarray(np.tile(np.array([[0, 1]], np.uint8), (40, 20)), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.save(folder / "palette.png", transparency=0)  # index 0 transparent -> white
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, 20:] = [0, 0, 255, 128]  # left half fully transparent, right half half-transparent blue
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.new("CMYK", (48, 32), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=95)  # red
    stored = np.zeros((60, 40, 3), np.uint8)  # stored 40 wide x 60 high, red block top-left
    stored[:15, :10] = [255, 0, 0]
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    (folder / "exif_rotated.jpg").write_bytes(jpeg_bytes(stored, exif=exif.tobytes()))
    return folder


def pixels_of(pool: Path, member: str) -> np.ndarray:
    row = next(row for row in read_csv(pool / "manifest.csv") if row["member"] == member)
    return load_png(pool / "images" / f"{row['image_id']}.png")


def test_odd_files_are_converted_or_rejected_with_a_reason(odd_folder, tmp_path):
    pool = tmp_path / "pool"
    params = make_params(pool, [{"type": "folder", "path": str(odd_folder), "licence": "test"}],
                         max_pixels=1_000_000)
    summary = run_ingest(params, tmp_path)

    manifest = read_csv(pool / "manifest.csv")
    assert list(manifest[0].keys()) == MANIFEST_COLUMNS
    assert [row["image_id"] for row in manifest] == sorted(row["image_id"] for row in manifest)
    assert sorted(row["member"] for row in manifest) == sorted([
        "good.jpg", "big.png", "sub/nested.png", "grey16.png", "rgb16.png", "grey.png",
        "palette.png", "rgba.png", "cmyk.jpg", "exif_rotated.jpg",
    ])
    reasons = {row["member"]: row["reason"] for row in read_csv(pool / "rejected.csv")}
    assert reasons["odd/zero.jpg"] == "empty file (0 bytes)"
    assert reasons["odd/truncated.jpg"].startswith("truncated or corrupt")
    assert reasons["odd/text.jpg"].startswith("not an image")
    assert "ingest.max_pixels=1000000" in reasons["odd/huge.png"]
    assert reasons["odd/sub/good_again.jpg"].startswith("duplicate: same bytes as folder-")
    assert reasons["odd/notes.txt"].startswith("unsupported file type '.txt': photos are .bmp")
    assert len(reasons) == 6 and summary["images"] == 10 and summary["rejected"] == 6
    assert summary["sources"]["folder/odd"]["found"] == 15

    for row in manifest:
        image = load_png(pool / "images" / f"{row['image_id']}.png")
        assert image.dtype == np.uint8 and image.shape == (int(row["height"]), int(row["width"]), 3)
        assert min(image.shape[:2]) <= SHORT_SIDE
        assert row["image_id"] == f"folder-{row['sha256'][:12]}" and row["licence"] == "test"
    big = next(row for row in manifest if row["member"] == "big.png")
    assert (big["width"], big["height"], big["orig_width"], big["orig_height"]) == ("85", "64", "400", "300")

    grey16 = pixels_of(pool, "grey16.png")
    assert grey16[0, 0].tolist() == [0, 0, 0] and grey16[0, -1].tolist() == [255, 255, 255]
    assert np.abs(grey16[0, :, 0].astype(int) - np.rint(RAMP16 / 257)).max() <= 1  # scaled, not clipped
    assert np.abs(pixels_of(pool, "rgb16.png")[5, 5].astype(int) - [255, 128, 0]).max() <= 1
    grey = pixels_of(pool, "grey.png")
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    palette = pixels_of(pool, "palette.png")
    assert palette[0, 0].tolist() == [255, 255, 255] and palette[0, 1].tolist() == [255, 0, 0]
    rgba = pixels_of(pool, "rgba.png")
    assert rgba[5, 5].tolist() == [255, 255, 255]
    assert np.abs(rgba[5, 30].astype(int) - [127, 127, 255]).max() <= 1
    red = pixels_of(pool, "cmyk.jpg")[16, 24].astype(int)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    rotated = pixels_of(pool, "exif_rotated.jpg")
    assert rotated.shape == (40, 60, 3)  # displayed landscape
    assert rotated[3, -3, 0] > 200 and rotated[3, 3, 0] < 60  # red block moved to the top right


def test_rerun_is_byte_identical(photo_folder, tmp_path):
    sources = [{"type": "folder", "path": str(photo_folder)}]
    first, second = tmp_path / "first", tmp_path / "second"
    run_ingest(make_params(first, sources), tmp_path)
    run_ingest(make_params(second, sources), tmp_path)
    run_ingest(make_params(first, sources), tmp_path)  # replaces the pool in place
    files = sorted(path.relative_to(first) for path in first.rglob("*") if path.is_file())
    assert len(files) == 12 + 2
    assert files == sorted(path.relative_to(second) for path in second.rglob("*") if path.is_file())
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    # No temporaries left (.raincheck/ holds the workspace's ingest lock).
    assert sorted(p.name for p in tmp_path.iterdir()) == [".raincheck", "first", "photos", "second"]


def test_too_few_images_fails_and_keeps_the_previous_pool(photo_folder, odd_folder, tmp_path):
    pool = tmp_path / "pool"
    run_ingest(make_params(pool, [{"type": "folder", "path": str(photo_folder)}]), tmp_path)
    before = (pool / "manifest.csv").read_bytes()

    with pytest.raises(IngestError, match=r"only 10 usable photos, but ingest.min_images=11") as error:
        run_ingest(make_params(pool, [{"type": "folder", "path": str(odd_folder)}],
                               max_pixels=1_000_000, min_images=11), tmp_path)
    assert "odd/zero.jpg: empty file" in str(error.value)
    assert (pool / "manifest.csv").read_bytes() == before
    assert len(list((pool / "images").iterdir())) == 12
    with pytest.raises(FileNotFoundError, match=r"ingest.sources\[0\].path"):
        run_ingest(make_params(pool, [{"type": "folder", "path": "no/such/folder"}]), tmp_path)


def test_pypi_wheel_photos_with_provenance(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (cache / "pypi").mkdir(parents=True)
    monkeypatch.setenv("RAINCHECK_CACHE", str(cache))
    rng = np.random.default_rng(5)
    wheel = cache / "pypi" / "scikit_image-0.0.1-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for member in ("skimage/data/astronaut.png", "skimage/data/chelsea.png", "skimage/data/camera.png"):
            buffer = io.BytesIO()
            Image.fromarray(textured_photo(rng, 70, 90)).save(buffer, format="PNG")
            archive.writestr(member, buffer.getvalue())
        archive.writestr("scikit_image-0.0.1.dist-info/LICENSE.txt", "BSD-3-Clause test licence\n")
        archive.writestr("skimage/data/README.txt", "sample data\n")

    pool = tmp_path / "pool"
    summary = run_ingest(make_params(pool, [{"type": "pypi", "packages": ["scikit-image"]}]), tmp_path)

    manifest = read_csv(pool / "manifest.csv")
    assert {row["member"]: row["licence"] for row in manifest} == {
        "skimage/data/astronaut.png": "public domain (NASA)",
        "skimage/data/chelsea.png": "CC0-1.0",
    }  # camera.png is not one of the listed photos
    provenance = {(row["source"], row["package"], row["version"]) for row in manifest}
    assert provenance == {("pypi", "scikit-image", "0.0.1")}
    notice = (pool / "licences" / "scikit-image.copyright").read_text()
    assert "BSD-3-Clause test licence" in notice and "sample data" in notice
    assert summary["sources"]["pypi/scikit-image"] == {"version": "0.0.1", "found": 2, "kept": 2, "rejected": 0}


def test_debian_source_without_apt_is_skipped_unless_required(photo_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("RAINCHECK_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # a machine without apt-get
    folder = {"type": "folder", "path": str(photo_folder)}
    debian = {"type": "debian", "packages": ["mate-backgrounds"]}
    summary = run_ingest(make_params(tmp_path / "pool", [debian, folder]), tmp_path)
    assert "apt-get not found" in summary["unavailable"]["debian/mate-backgrounds"]
    assert summary["images"] == 12
    with pytest.raises(IngestError, match=r"ingest.sources\[0\] \(debian/mate-backgrounds\) is required"):
        run_ingest(make_params(tmp_path / "pool", [{**debian, "required": True}, folder]), tmp_path)


def test_tar_extraction_never_writes_outside_the_target(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        def add(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, 0 if link else 5
            archive.addfile(info, None if link else io.BytesIO(b"photo"))

        add("./usr/share/photos/ok.jpg")
        add("/tmp/absolute.jpg")
        add("../escape.jpg")
        add("usr/../../escape2.jpg")
        add("usr/share/photos/evil", tarfile.SYMTYPE, "/")
        add("usr/share/photos/evil/etc/through_link.jpg")
        add("usr/share/photos/hard.jpg", tarfile.LNKTYPE, "/etc/passwd")
    buffer.seek(0)
    target = tmp_path / "nested" / "target"
    target.mkdir(parents=True)
    with tarfile.open(fileobj=buffer, mode="r|") as archive:
        extracted, refused = safe_extract(archive, target, lambda name: name.endswith(".jpg"))

    assert extracted == ["usr/share/photos/ok.jpg", "usr/share/photos/evil/etc/through_link.jpg"]
    assert dict(refused) == {
        "/tmp/absolute.jpg": "unsafe path: absolute",
        "../escape.jpg": "unsafe path: '..' component",
        "usr/../../escape2.jpg": "unsafe path: '..' component",
    }
    written = sorted(p.relative_to(target).as_posix() for p in tmp_path.rglob("*") if p.is_file() or p.is_symlink())
    assert written == ["usr/share/photos/evil/etc/through_link.jpg", "usr/share/photos/ok.jpg"]  # no links


def test_package_rules_and_per_file_licences():
    plasma = DEBIAN_RULES["plasma-workspace-wallpapers"]
    members = [
        "usr/share/wallpapers/Path/contents/images/640x480.jpg",
        "usr/share/wallpapers/Path/contents/images/2560x1600.jpg",
        "usr/share/wallpapers/Kite/contents/images/2560x1600.jpg",
        "usr/share/wallpapers/Altai/contents/images/5120x2880.png",  # an illustration
    ]
    assert [m for m in members if plasma.matches(m)] == members[:3]
    assert keep_largest(plasma, members) == [members[2], members[1]]
    lomiri = DEBIAN_RULES["lomiri-wallpapers-16.04"]
    assert lomiri.matches("usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg")
    assert not lomiri.matches("usr/share/backgrounds/umang_by_Abhishek_Mudgal.jpg")

    stanzas = parse_copyright(
        "Format: dep5\n\nFiles: *\nCopyright: all\nLicense: Expat\n\n"
        "Files: 16.04/seeding_by_X.jpg\nCopyright: X\nLicense: CC0-1.0\n\n"
        "Files: nature/One.jpg\n       nature/Two.jpg\nCopyright: Y\nLicense: GPL-2+\n text of the licence\n"
    )
    assert licence_for("usr/share/backgrounds/seeding_by_X.jpg", stanzas, "CC-BY-SA-4.0") == "CC0-1.0"
    assert licence_for("usr/share/backgrounds/mate/nature/Two.jpg", stanzas, "?") == "GPL-2+"
    assert licence_for("usr/share/backgrounds/other.jpg", stanzas, "CC-BY-SA-4.0") == "CC-BY-SA-4.0"


def test_largest_jpeg_inside_a_container():
    rng = np.random.default_rng(9)
    small, large = jpeg_bytes(textured_photo(rng, 24, 32)), jpeg_bytes(textured_photo(rng, 48, 64))
    container = b"EET\x00header\xff\xd8\xffnot-a-jpeg" + small + b"\x00" * 7 + large + b"index"
    found = largest_jpeg(container, max_pixels=10**6)
    assert found.startswith(large)
    assert decode_photo(found, max_pixels=10**6, short_side=512).image.shape == (48, 64, 3)
    assert largest_jpeg(container, max_pixels=1000).startswith(small)  # 48x64 is over the limit
    with pytest.raises(ValueError, match="no decodable JPEG"):
        largest_jpeg(b"\xff\xd8\xff" + b"\x00" * 100, max_pixels=10**6)


def test_decode_rejects_float_images_and_never_enlarges():
    buffer = io.BytesIO()
    Image.fromarray(np.ones((8, 8), np.float32)).save(buffer, format="TIFF")
    with pytest.raises(DecodeError, match="mode F"):
        decode_photo(buffer.getvalue(), max_pixels=10**6, short_side=4)
    small = jpeg_bytes(np.full((10, 12, 3), 90, np.uint8))
    assert decode_photo(small, max_pixels=10**6, short_side=512).image.shape == (10, 12, 3)


@pytest.mark.parametrize(
    "source, message",
    [
        ({"type": "pypi", "packages": ["numpy"]}, "ingest.sources.0.pypi.packages.0"),
        ({"type": "folder", "path": "x", "recursive": True}, "unknown key"),
        ({"type": "debian", "packages": ["tuxpaint-data", "tuxpaint-data"]}, "more than once"),
        ({"type": "ftp", "path": "x"}, "ingest.sources.0"),
    ],
)
def test_ingest_params_are_strict(source, message, tmp_path):
    with pytest.raises(ParamsError, match=message):
        make_params(tmp_path, [source])
