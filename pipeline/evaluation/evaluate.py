"""The `evaluate` step: score the trained model on every suite, rain region and background apart.

Reads `{model}/model.pt` and the suites; writes `{evaluation}/metrics.json` (flat
`<metric>/<suite>` keys, DVC metrics), `per_image.csv` (one row per suite and image, DVC plots)
and `report.png` (docs/dataflow.md).

Suites: the synthesized ones (`{suites}/<name>/{clean,rainy,rain}/<image_id>.png`), and the
user's folders from `evaluate.folders`: `paired` (clean/ + rainy/, optional rain/) are scored
like synthesized suites, `unpaired` (real rainy photos) appear only in the report.

Suite means are arithmetic means of the per-image scores (PSNR averaged in dB, as BasicSR does);
NaN scores (empty rain mask or empty background) are left out of the means and counted
(`empty_masks/<suite>`, `empty_backgrounds/<suite>`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline import layout
from pipeline.config import PairedFolderSuite, Params
from pipeline.evaluation.metrics import binary_mask, output_and_input_scores
from pipeline.evaluation.report import Sample, make_sample, render_fullsize, render_report, report_subtitle
from pipeline.io import IMAGE_SUFFIXES, atomic_path, read_image, write_json

# Column order of per_image.csv: each score, then the rainy input's, then the gain.
SCORE_ORDER = (
    "psnr", "psnr_y601", "ssim", "ssim_y601",
    "psnr_rain", "psnr_bg", "mse_ratio", "psnr_rain_soft", "psnr_bg_soft", "mse_ratio_soft",
)  # fmt: skip


@dataclass(frozen=True)
class SuiteItem:
    """One image of a suite: its rainy input, clean reference and rain layer (None when absent)."""

    image_id: str
    rainy: Path
    clean: Path | None = None
    rain: Path | None = None


@dataclass(frozen=True)
class Suite:
    """A named set of images. `paired` suites are scored; `unpaired` ones are only shown."""

    name: str
    kind: str  # "paired" | "unpaired"
    items: tuple[SuiteItem, ...]
    dry: bool = False  # a `clean` suite: no rain, the input is the reference (psnr/<suite> = PSNR(output, input))

    @property
    def has_masks(self) -> bool:
        return self.kind == "paired" and all(item.rain is not None for item in self.items)


@dataclass
class EvaluationResult:
    """What `evaluate_model` found: the contents of per_image.csv, metrics.json and report.png."""

    rows: list[dict] = field(default_factory=list)  # one per scored image (per_image.csv)
    metrics: dict = field(default_factory=dict)  # flat `<metric>/<suite>` means and counts
    samples: list[Sample] = field(default_factory=list)  # report panels


# ----------------------------------------------------------------------------- reading suites
def _images_by_id(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            if path.stem in found:
                raise ValueError(f"{folder}: two images share the id {path.stem!r}: {found[path.stem].name}, {path.name}")
            found[path.stem] = path
    return found


def _require_folder(folder: Path, what: str, hint: str = "") -> None:
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: folder {folder} not found{hint}")


def _paired_items(name: str, folder: Path, suffixes: tuple[str, ...], need_rain: bool) -> tuple[SuiteItem, ...]:
    """Match clean/, rainy/ and (when present or needed) rain/ by file stem."""
    for sub in ("clean", "rainy") + (("rain",) if need_rain else ()):
        _require_folder(folder / sub, f"suite {name!r}")
    clean = _images_by_id(folder / "clean", suffixes)
    rainy = _images_by_id(folder / "rainy", suffixes)
    rain = _images_by_id(folder / "rain", suffixes) if (folder / "rain").is_dir() else None
    if not rainy:
        raise ValueError(f"suite {name!r}: no images in {folder / 'rainy'} (allowed: {', '.join(suffixes)})")
    layers = [("clean", clean)] + ([("rain", rain)] if rain is not None else [])
    for sub, found in layers:
        missing = sorted(set(rainy) ^ set(found))
        if missing:
            examples = ", ".join(missing[:5])
            raise ValueError(f"suite {name!r}: rainy/ and {sub}/ in {folder} do not hold the same image ids; unmatched: {examples}")
    return tuple(SuiteItem(i, rainy[i], clean[i], rain[i] if rain is not None else None) for i in sorted(rainy))


def load_suites(params: Params, root: Path) -> list[Suite]:
    """The suites of `params.evaluate`: synthesized ones first, then the user's folders."""
    root = Path(root)
    suites = []
    for name in params.evaluate.suites:
        folder = root / params.paths.suites / name
        _require_folder(folder, f"suite {name!r}", " (run `raincheck synthesize` first)")
        dry = params.synthesize.suites[name].generator == "clean"
        suites.append(Suite(name, "paired", _paired_items(name, folder, (".png",), need_rain=True), dry=dry))
    for spec in params.evaluate.folders:
        folder = root / spec.path  # an absolute `path` stays absolute
        _require_folder(folder, f"evaluate.folders {spec.name!r}")
        if isinstance(spec, PairedFolderSuite):
            suites.append(Suite(spec.name, "paired", _paired_items(spec.name, folder, IMAGE_SUFFIXES, need_rain=False)))
            continue
        images = _images_by_id(folder, IMAGE_SUFFIXES)
        if not images:
            raise ValueError(f"evaluate.folders {spec.name!r}: no images in {folder} (allowed: {', '.join(IMAGE_SUFFIXES)})")
        suites.append(Suite(spec.name, "unpaired", tuple(SuiteItem(i, images[i]) for i in sorted(images))))
    return suites


def _load_item(item: SuiteItem) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(rainy, clean, rain) arrays; sizes checked against the rainy image, naming both files."""
    rainy = read_image(item.rainy)
    clean = None if item.clean is None else read_image(item.clean)
    rain = None if item.rain is None else read_image(item.rain, grey=True)
    for other, path in ((clean, item.clean), (rain, item.rain)):
        if other is not None and other.shape[:2] != rainy.shape[:2]:
            raise ValueError(
                f"size mismatch: {path} is {other.shape[1]}x{other.shape[0]} but {item.rainy} is "
                f"{rainy.shape[1]}x{rainy.shape[0]} (width x height)"
            )
    return rainy, clean, rain


# ----------------------------------------------------------------------------- scoring
def _derain_suite(model, suite: Suite, tile: int, overlap: int, batch_size: int, device) -> Iterator[tuple]:
    """Yield (item, rainy, clean, rain, output) for every image of `suite`, in order.

    Consecutive same-size images up to `tile` px go through the model `batch_size` at a time;
    a larger image is derained alone (tiled), so memory holds one large image at a time.
    """
    from pipeline.inference import derain_batch

    pending: list[tuple] = []

    def flush() -> Iterator[tuple]:
        if pending:
            outputs = derain_batch(model, np.stack([entry[1] for entry in pending]), batch_size, tile, overlap, device)
            yield from ((*entry, output) for entry, output in zip(pending, outputs))
            pending.clear()

    for item in suite.items:
        entry = (item, *_load_item(item))
        shape = entry[1].shape
        if pending and (shape != pending[0][1].shape or len(pending) == batch_size):
            yield from flush()
        pending.append(entry)
        if max(shape[:2]) > tile:
            yield from flush()
    yield from flush()


def suite_metrics(suite: Suite, rows: list[dict]) -> dict:
    """Flat `<metric>/<suite>` means (NaN left out; all-NaN gives NaN) and image counts."""
    metrics: dict = {f"n_images/{suite.name}": len(suite.items)}
    if suite.has_masks:
        coverage = [row["mask_coverage"] for row in rows]
        metrics[f"empty_masks/{suite.name}"] = sum(c == 0 for c in coverage)
        metrics[f"empty_backgrounds/{suite.name}"] = sum(c == 1 for c in coverage)
    keys = [key for key in rows[0] if key not in ("suite", "image_id", "height", "width")] if rows else []
    if suite.dry:  # no rain: only the output against the untouched input means anything
        keys = [key for key in keys if key in ("psnr", "psnr_y601", "ssim", "ssim_y601")]
    for key in keys:
        values = np.array([row[key] for row in rows], dtype=np.float64)
        finite = values[~np.isnan(values)]
        metrics[f"{key}/{suite.name}"] = round(float(finite.mean()), 4) if finite.size else math.nan
    return metrics


def evaluate_model(
    model,
    suites: list[Suite],
    mask_threshold: float = 50,
    report_images: int = 3,
    tile: int = 512,
    overlap: int = 32,
    batch_size: int = 8,
    device=None,
) -> EvaluationResult:
    """Derain every suite's rainy images with `model` and score them against the clean ones.

    `model`: torch module, float32 NCHW in [0, 1] -> same shape in [0, 1]. Returns per-image rows
    (paired suites), the suite means and counts, and the first `report_images` images of each
    suite as report samples: the worst, median and best by whole-image PSNR gain (by PSNR on a
    dry suite; the first ones, by id, on an unpaired suite), so the report shows the spread.
    """
    from tqdm import tqdm

    result = EvaluationResult()
    for suite in suites:
        rows, ranked = [], []
        derained = _derain_suite(model, suite, tile, overlap, batch_size, device)
        progress = tqdm(derained, total=len(suite.items), desc=f"evaluate {suite.name}", unit="img", leave=False)
        for index, (item, rainy, clean, rain, output) in enumerate(progress):
            scores = {}
            if clean is not None:
                scores = output_and_input_scores(output, rainy, clean, rain, mask_threshold)
                coverage = {} if rain is None else {"mask_coverage": float(binary_mask(rain, mask_threshold).mean())}
                height, width = rainy.shape[:2]
                rows.append({"suite": suite.name, "image_id": item.image_id, "height": height, "width": width, **coverage, **scores})
            if report_images and (scores or index < report_images):
                rank = scores.get("psnr" if suite.dry else "psnr_gain", -index)
                ranked.append((rank, make_sample(suite.name, item.image_id, rainy, output, clean, rain, mask_threshold, scores)))
        result.samples.extend(spread(ranked, report_images))
        result.rows.extend(rows)
        result.metrics.update(suite_metrics(suite, rows))
    return result


def spread(ranked: list[tuple[float, Sample]], count: int) -> list[Sample]:
    """`count` samples evenly spread from worst to best rank (NaN ranks last), worst first."""
    if count <= 0 or not ranked:
        return []
    order = sorted(ranked, key=lambda pair: (math.isnan(pair[0]), pair[0]))
    picks = sorted({round(i * (len(order) - 1) / max(count - 1, 1)) for i in range(min(count, len(order)))})
    return [order[i][1] for i in picks]


# ----------------------------------------------------------------------------- files
def per_image_columns(rows: list[dict]) -> list[str]:
    """Identity columns, then each score followed by its `_input` and `_gain` (those present)."""
    present = {key for row in rows for key in row}
    columns = [c for c in ("suite", "image_id", "height", "width", "mask_coverage") if c in present]
    for score in SCORE_ORDER:
        columns += [c for c in (score, f"{score}_input", f"{score}_gain") if c in present]
    return columns


def write_per_image(path: Path, rows: list[dict]) -> None:
    """per_image.csv; NaN and scores a suite lacks are empty cells (read back as NaN)."""
    import csv

    columns = per_image_columns(rows)

    def cell(value: object) -> object:
        if isinstance(value, float):
            return "" if math.isnan(value) else round(value, 6)
        return value

    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: cell(row.get(key, math.nan)) for key in columns} for row in rows)


def load_model(path: Path):
    """The trained deraining model (torch module in eval mode) from `{model}/model.pt`."""
    from pipeline.models.factory import load_derain_model

    if not Path(path).is_file():
        raise FileNotFoundError(f"model checkpoint {path} not found: run `raincheck train` first")
    return load_derain_model(path)


def run_evaluate(params: Params, root: Path) -> dict:
    """Evaluate `{model}/model.pt` on every suite; write metrics.json, per_image.csv, report.png."""
    import torch

    root = Path(root)
    settings = params.evaluate
    suites = load_suites(params, root)  # fail on a bad suite before loading the model
    model = load_model(root / params.paths.model / layout.MODEL)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    result = evaluate_model(
        model,
        suites,
        mask_threshold=settings.mask_threshold,
        report_images=settings.report_images,
        tile=settings.tile,
        overlap=settings.overlap,
        batch_size=settings.batch_size,
        device=device,
    )
    written = write_outputs(root / params.paths.evaluation, result, [suite.name for suite in suites],
                            report_subtitle(params.train.model.type, root / params.paths.model / layout.MODEL, root))
    headline = ("psnr", "psnr_rain", "psnr_rain_gain", "psnr_bg", "empty_masks", "n_images")
    return {
        "outputs": [str(path) for path in written],
        "metrics": {key: value for key, value in result.metrics.items() if key.split("/")[0] in headline},
    }


def write_outputs(folder: Path, result: EvaluationResult, suite_names: list[str], subtitle: str = "") -> list[Path]:
    """Write metrics.json, per_image.csv and report.png into `folder`; returns their paths."""
    paths = [folder / layout.METRICS, folder / layout.PER_IMAGE, folder / layout.REPORT, folder / layout.FULLSIZE]
    write_json(paths[0], result.metrics)
    write_per_image(paths[1], result.rows)
    render_report(paths[2], result.metrics, suite_names, result.samples, subtitle)
    render_fullsize(paths[3], result.samples)
    return paths
