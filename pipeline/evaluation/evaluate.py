"""The `evaluate` step: score the trained model on every suite, rain region and background apart.

Reads `{model}/model.pt` and the suites; writes `{evaluation}/metrics.json` (flat
`<metric>/<suite>` keys, DVC metrics), `per_image.csv` (one row per suite and image, DVC plots)
and `report.png` (docs/dataflow.md).

Suites (pipeline/evaluation/suites.py): the synthesized ones, and the user's folders from
`evaluate.folders`: `paired` ones are scored like synthesized suites, `unpaired` (real rainy
photos) appear only in the report.

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
from pipeline.config import Params
from pipeline.evaluation.metrics import binary_mask, output_and_input_scores
from pipeline.evaluation.report import Sample, make_sample, render_fullsize, render_report, report_subtitle
from pipeline.evaluation.suites import Suite, load_item, load_suites
from pipeline.io import atomic_path, write_json

# Column order of per_image.csv: each score, then the rainy input's, then the gain.
SCORE_ORDER = (
    "psnr", "psnr_y601", "ssim", "ssim_y601",
    "psnr_rain", "psnr_bg", "mse_ratio", "psnr_rain_soft", "psnr_bg_soft", "mse_ratio_soft",
)  # fmt: skip


@dataclass
class EvaluationResult:
    """What `evaluate_model` found: the contents of per_image.csv, metrics.json and report.png."""

    rows: list[dict] = field(default_factory=list)  # one per scored image (per_image.csv)
    metrics: dict = field(default_factory=dict)  # flat `<metric>/<suite>` means and counts
    samples: list[Sample] = field(default_factory=list)  # report panels


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
        entry = (item, *load_item(item))
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
