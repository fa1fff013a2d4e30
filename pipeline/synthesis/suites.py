"""The `synthesize` step: materialize the fixed rain test suites and a gallery (docs/dataflow.md).

For each suite in params.synthesize.suites, every `{curated}/eval/<split>/<image_id>.png` (sorted
by image_id) gets rain from the suite's presets with seed = base + index, where
base = stream_seed(params.seed, "synthesize", <suite>): image i always gets the same rain.
The whole `{suites}/` folder is written to a temporary sibling and renamed into place, so it
always matches the current params (no stale suites) and a crash leaves the old one intact.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline import layout
from pipeline.config import Params, SuiteSpec
from pipeline.io import atomic_path, load_png, save_png, write_csv
from pipeline.params.presets import PRESETS
from pipeline.seeds import stream_seed

MANIFEST_COLUMNS = ["image_id", "index", "seed", "preset", "amount", "width", "length", "angle", "beta", "coverage"]
EXTRA_COLUMNS = ["haze", "airlight"]  # only in suites whose rain entries carry the haze extra
GALLERY_TILE = 128  # px, edge of each gallery tile


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Run torch with `count` intra-op threads, restoring the previous setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _eval_images(curated: Path, split: str, suite: str) -> list[Path]:
    folder = curated / "eval" / split
    images = sorted(folder.glob("*.png"), key=lambda path: path.stem)
    if not images:
        raise FileNotFoundError(
            f"{folder}: no PNG images to build suite {suite!r} on (split {split!r}); "
            "run `raincheck curate` first or check synthesize.suites.<suite>.split"
        )
    return images


def add_rain(clean: np.ndarray, spec: SuiteSpec, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(rainy uint8 HxWx3, rain layer uint8 HxW, drawn parameters) for one image of a suite.

    The recipe draws from torch seeded with `seed`, the out-of-distribution models from
    numpy.random.default_rng(seed); a `clean` suite gives the photo back with an empty layer.
    """
    if spec.generator == "recipe":
        from pipeline.synthesis.rain import synthesize_rain

        return synthesize_rain(clean, spec.presets, seed)
    if spec.generator == "clean":
        return clean.copy(), np.zeros(clean.shape[:2], dtype=np.uint8), {"preset": "clean"}
    from pipeline.synthesis.ood_rain import GENERATORS

    return GENERATORS[spec.generator](clean, np.random.default_rng(seed))


def synthesize_suite(name: str, spec: SuiteSpec, images: list[Path], folder: Path, params: Params) -> list[dict]:
    """Write clean/, rainy/, rain/ and manifest.csv for one suite into `folder`; returns the rows."""
    from tqdm import tqdm

    base = stream_seed(params.seed, "synthesize", name)
    has_extras = any(not isinstance(entry, str) and entry.extras for entry in spec.presets)
    rows = []
    for index, path in enumerate(tqdm(images[: spec.max_images], desc=f"synthesize {name}", unit="image", leave=False)):
        clean = load_png(path)
        seed = base + index
        rainy, layer, drawn = add_rain(clean, spec, seed)
        image_id = path.stem
        save_png(folder / "clean" / f"{image_id}.png", clean)
        save_png(folder / "rainy" / f"{image_id}.png", rainy)
        save_png(folder / "rain" / f"{image_id}.png", layer)
        coverage = float(np.mean(layer > params.synthesize.mask_threshold))
        row = {"image_id": image_id, "index": index, "seed": seed, **drawn, "coverage": coverage}
        if has_extras:
            row.setdefault("haze", 0.0)
            row.setdefault("airlight", 1.0)
        rows.append(row)
    columns = MANIFEST_COLUMNS + (EXTRA_COLUMNS if has_extras else [])
    if spec.generator != "recipe":  # other rain models draw other parameters
        drawn_keys = sorted({key for row in rows for key in row} - {"image_id", "index", "seed", "preset", "coverage"})
        columns = ["image_id", "index", "seed", "preset", *drawn_keys, "coverage"]
    write_csv(folder / layout.MANIFEST, rows, columns)
    return rows


def _tile(image: np.ndarray) -> np.ndarray:
    """Resize uint8 HxW(x3) to a GALLERY_TILE² RGB tile (nearest neighbour keeps streaks crisp)."""
    from PIL import Image

    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.asarray(Image.fromarray(image).resize((GALLERY_TILE, GALLERY_TILE), Image.NEAREST))


def gallery(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], threshold: int = 50) -> np.ndarray:
    """One labelled row per (label, clean, rainy, rain layer): uint8 RGB image, tiles side by side.

    The last tile is the binary mask the evaluation scores (R > threshold, white = rain) with its
    coverage (% of pixels), beside the soft rain layer R (0..255) it is cut from."""
    from PIL import Image, ImageDraw

    label_width, gap = 150, 4
    header = 18
    width = label_width + 4 * (GALLERY_TILE + gap)
    height = header + len(rows) * (GALLERY_TILE + gap)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for column, title in enumerate(("clean", "rainy", "soft rain layer R", f"mask R > {threshold}")):
        draw.text((label_width + column * (GALLERY_TILE + gap), 3), title, fill=(0, 0, 0))
    for r, (label, clean, rainy, layer) in enumerate(rows):
        top = header + r * (GALLERY_TILE + gap)
        draw.text((4, top + GALLERY_TILE // 2 - 12), label, fill=(0, 0, 0))
        mask = layer > threshold
        for column, image in enumerate((clean, rainy, layer, mask.astype(np.uint8) * 255)):
            canvas.paste(Image.fromarray(_tile(image)), (label_width + column * (GALLERY_TILE + gap), top))
        # Coverage on a white box over the mask tile: what share of the image the rain-region PSNR scores.
        left = label_width + 3 * (GALLERY_TILE + gap)
        draw.rectangle((left, top + GALLERY_TILE - 14, left + 92, top + GALLERY_TILE), fill=(255, 255, 255))
        draw.text((left + 3, top + GALLERY_TILE - 13), f"coverage {100 * mask.mean():.1f}%", fill=(200, 0, 0))
    return np.asarray(canvas)


def run_synthesize(params: Params, root: Path) -> dict:
    """Materialize every suite of params.synthesize.suites under {suites}/ plus {suites}/gallery.png.

    Reads {curated}/eval/<split>/*.png (uint8 RGB). Returns a summary: per suite the image count,
    split, rain entries and mean coverage (fraction of R > synthesize.mask_threshold).
    """
    from pipeline.synthesis.rain import synthesize_rain

    root = Path(root)
    curated = root / params.paths.curated
    suites_dir = root / params.paths.suites
    inputs = {
        name: _eval_images(curated, spec.split, name) for name, spec in params.synthesize.suites.items()
    }
    summary: dict = {"suites": {}}
    gallery_rows = []
    # One image at a time is too little work to split across threads; on a busy 2-core machine
    # OpenMP threads that wait on each other made it ~20x slower here.
    with _torch_threads(1), atomic_path(suites_dir) as tmp:
        for name, spec in params.synthesize.suites.items():
            rows = synthesize_suite(name, spec, inputs[name], tmp / name, params)
            summary["suites"][name] = {
                "images": len(rows),
                "split": spec.split,
                "rain": [entry if isinstance(entry, str) else entry.name for entry in spec.presets] or [spec.generator],
                "coverage_mean": float(np.mean([row["coverage"] for row in rows])),
            }
            first = rows[0]["image_id"]
            gallery_rows.append(
                (
                    f"suite {name}\n{rows[0]['preset']}" + (f", angle {float(rows[0]['angle']):.0f}" if "angle" in rows[0] else ""),
                    load_png(tmp / name / "clean" / f"{first}.png"),
                    load_png(tmp / name / "rainy" / f"{first}.png"),
                    load_png(tmp / name / "rain" / f"{first}.png", grey=True),
                )
            )
        # Each preset on the same background, so the rain ranges can be compared by eye.
        background = load_png(next(iter(inputs.values()))[0])
        preset_rows = []
        for preset in PRESETS:
            rainy, layer, drawn = synthesize_rain(background, [preset], stream_seed(params.seed, "gallery", preset))
            preset_rows.append((f"preset {preset}\nangle {drawn['angle']}, width {drawn['width']}", background, rainy, layer))
        save_png(tmp / layout.GALLERY, gallery(preset_rows + gallery_rows, params.synthesize.mask_threshold))
    summary["gallery"] = str(suites_dir / layout.GALLERY)
    return summary
