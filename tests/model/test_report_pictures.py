"""The report pictures a person reads: the suites gallery's mask and coverage, the prior's
labelled reconstructions across complexity with per-tile PSNR, the evaluation report's subtitle and
colour bar, the registry's copy of it titled with version, commit and gate verdict."""

from __future__ import annotations

import subprocess

import numpy as np
import torch

from pipeline.evaluation.report import make_sample, recon_report, recon_sheet, recon_tiles, render_report, report_subtitle
from pipeline.registry.report_title import BAND_PX, registry_title, titled_report
from pipeline.synthesis.suites import GALLERY_TILE, gallery
from tests.conftest import textured_photo


def test_gallery_shows_the_binary_mask_beside_the_soft_layer():
    rng = np.random.default_rng(0)
    clean = textured_photo(rng, GALLERY_TILE, GALLERY_TILE)
    layer = np.zeros((GALLERY_TILE, GALLERY_TILE), np.uint8)
    layer[:, :32] = 30   # faint rain: in the soft layer, not in the mask
    layer[:, 64:96] = 200  # rain the evaluation scores: 25% of the pixels
    sheet = gallery([("suite x", clean, clean, layer)], threshold=50)
    left = 150 + 3 * (GALLERY_TILE + 4)
    mask_tile = sheet[18 : 18 + GALLERY_TILE - 16, left : left + GALLERY_TILE]  # above the coverage label
    assert sheet.shape[1] == left + GALLERY_TILE + 4
    assert set(np.unique(mask_tile)) == {0, 255}
    assert (mask_tile[:, 64:96] == 255).all() and (mask_tile[:, :32] == 0).all()
    soft_tile = sheet[18 : 18 + GALLERY_TILE - 16, left - GALLERY_TILE - 4 : left - 4]
    assert (soft_tile[:, :32] == 30).all()  # the soft layer keeps the faint rain
    label = sheet[18 + GALLERY_TILE - 14 : 18 + GALLERY_TILE, left : left + 92]
    assert (label[..., 0].astype(int) - label[..., 1] > 100).any()  # the red coverage text is drawn


def test_recon_sheet_labels_rows_and_scores_each_tile():
    rng = np.random.default_rng(1)
    originals = np.stack([textured_photo(rng, 16, 16) for _ in range(3)])
    recon = torch.from_numpy(originals.astype(np.float32) / 255).permute(0, 3, 1, 2)
    sheet = recon_sheet(originals, recon)
    assert sheet.shape == (2 * 32 + 16, 110 + 3 * 32, 3)
    assert (sheet[:64, :110] < 128).any()  # row labels
    assert (sheet[64:, 110:] < 128).any()  # a PSNR under each tile
    assert np.array_equal(sheet[:32:2, 110:142:2], originals[0])


def test_recon_tiles_span_complexity_lowest_first_and_are_labelled():
    """From a flat patch to the busiest, at evenly spaced quantiles of the measure; the same
    tiles every time; each labelled under it (measure and PSNR: two text lines)."""
    from pipeline.curation.complexity import gradient

    rng = np.random.default_rng(3)
    flat = np.full((6, 16, 16, 3), 120, np.uint8)
    noisy = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    textured = np.stack([textured_photo(rng, 16, 16) for _ in range(30)])
    patches = np.concatenate([textured[:15], noisy, flat, textured[15:]])
    rows, values = recon_tiles(patches, "gradient", count=5)
    everything = gradient(patches)
    assert len(set(rows.tolist())) == 5 and np.array_equal(values, everything[rows])
    assert values[0] == 0 and values[-1] == everything.max() and (np.diff(values) >= 0).all()
    assert np.array_equal(recon_tiles(patches, "gradient", count=5)[0], rows)  # deterministic
    assert len(recon_tiles(patches[:3], "entropy")[0]) == 3  # fewer patches than tiles: each once

    redrawn = []
    sheet = recon_report(patches, "gradient", lambda tiles: redrawn.append(tiles) or torch.from_numpy(tiles / 255.0).permute(0, 3, 1, 2))
    assert len(redrawn[0]) == 8 and np.array_equal(sheet[:32:2, 110:142:2], redrawn[0][0])  # the flattest tile first
    footer = sheet[64:, 110:142]  # under the first tile: "gradient 0" then "... dB"
    inked = np.flatnonzero((footer < 128).any(axis=(1, 2)))
    assert inked.size and inked.max() - inked.min() > 12  # two lines of text, not one


def test_registry_report_title_names_version_commit_and_verdict(tmp_path):
    failed = {"model_name": "raincheck-derain", "version": "3", "aliases": ["candidate"], "promote": False, "gate": "failed",
              "reasons": ["ok   psnr/clean = 45.420 >= floor 35", "FAIL psnr_bg_gain/screen = -8.940 < floor 0",
                          "FAIL psnr_bg_gain/wind = -10.070 < floor 0"]}
    title = registry_title(failed, "3fbb8b4aabbccdd", dirty=True)
    assert title == ("raincheck-derain v3 (candidate, not promoted) · commit 3fbb8b4a (modified) · "
                     "gate FAIL: psnr_bg_gain/screen = -8.940 < floor 0 (+1 more)")
    passed = {**failed, "version": "4", "aliases": ["candidate", "champion"], "promote": True, "gate": "passed"}
    assert registry_title(passed, "abc") == "raincheck-derain v4 (candidate, champion) · commit abc · gate PASS"
    assert registry_title({**passed, "gate": "none"}, "abc").endswith("gate NONE: register.gates is none")

    from PIL import Image

    report = np.random.default_rng(4).integers(0, 256, (60, 400, 3), dtype=np.uint8)
    Image.fromarray(report).save(tmp_path / "evaluation.png")
    titled_report(tmp_path / "evaluation.png", tmp_path / "registry.png", title, "FAIL")
    with Image.open(tmp_path / "registry.png") as image:
        assert image.text["Title"] == title
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == (60 + BAND_PX, 400, 3) and np.array_equal(pixels[BAND_PX:], report)  # the report, untouched
    band = pixels[:BAND_PX].astype(int)
    assert (band[..., 0] - band[..., 1] > 20).mean() > 0.5 and (band.max(axis=-1) < 100).any()  # red band, dark text


def test_report_names_the_model_and_has_a_colour_bar(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "model.pt").write_bytes(b"weights")
    subtitle = report_subtitle("masked_prior", tmp_path / "model.pt", tmp_path)
    assert subtitle.startswith("masked_prior model, weights sha256 ") and "commit none" in subtitle  # no commit yet
    rng = np.random.default_rng(2)
    clean = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    rain = np.zeros((40, 50), np.uint8)
    rain[:, ::5] = 200
    scores = {k: 20.0 for k in ("psnr", "psnr_input", "psnr_rain", "psnr_rain_input", "psnr_bg", "psnr_bg_input")}
    sample = make_sample("seen", "a", clean, clean // 2, clean, rain, 50, scores)
    render_report(tmp_path / "with.png", {"psnr/seen": 20.0}, ["seen"], [sample], subtitle)
    render_report(tmp_path / "without.png", {"psnr/seen": 20.0}, ["seen"], [sample])
    from PIL import Image

    with_bar = np.asarray(Image.open(tmp_path / "with.png").convert("RGB")).astype(int)
    top_right = with_bar[: with_bar.shape[0] // 4, int(with_bar.shape[1] * 0.75) :]
    assert (np.abs(top_right[..., 0] - top_right[..., 2]) > 60).any()  # the magma colour bar
    assert (tmp_path / "with.png").read_bytes() != (tmp_path / "without.png").read_bytes()
