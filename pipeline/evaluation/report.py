"""report.png: the evaluation a person looks at.

Top: the metric table (one column per suite, model beside its rainy input). Below, for a few
images per suite: rainy | output | clean | |error| inside the rain mask | |error| on the
background. The error maps share one fixed colour scale (0 to ERROR_VMAX grey levels) so that
reports of different runs compare at a glance. Unpaired suites (real rain, no reference) show
rainy | output only; paired suites without masks show the whole-image error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.io import atomic_path

ERROR_VMAX = 64.0  # grey levels: errors at or above this show as the brightest colour
THUMBNAIL_SIDE = 320  # panels are box-downscaled to at most this many pixels per side

# (metric key, label) rows of the table; a row appears when any suite has the key.
TABLE_METRICS = (
    ("psnr", "PSNR RGB (dB)"),
    ("psnr_input", "  rainy input"),
    ("psnr_y601", "PSNR Y BT.601 (dB)"),
    ("psnr_y601_input", "  rainy input"),
    ("ssim", "SSIM RGB"),
    ("ssim_input", "  rainy input"),
    ("psnr_rain", "rain-region PSNR (dB)"),
    ("psnr_rain_input", "  rainy input"),
    ("psnr_rain_gain", "  gain over input"),
    ("psnr_bg", "background PSNR (dB)"),
    ("psnr_bg_input", "  rainy input"),
    ("psnr_bg_gain", "  gain over input"),
    ("mse_ratio", "rain MSE / background MSE"),
    ("mse_ratio_input", "  rainy input"),
    ("empty_masks", "images with empty mask"),
    ("n_images", "images"),
)


@dataclass(frozen=True)
class Sample:
    """One image's panels, downscaled for display.

    rainy, output, clean: uint8 hxwx3 in [0, 255]; error: float32 hxw, mean |output − clean| over
    channels in [0, 255]; mask: bool hxw, the binary rain mask. clean/error are None for an
    unpaired suite, mask None without a rain layer.
    """

    suite: str
    image_id: str
    rainy: np.ndarray
    output: np.ndarray
    clean: np.ndarray | None = None
    error: np.ndarray | None = None
    mask: np.ndarray | None = None
    scores: dict = field(default_factory=dict)


def _shrink(array: np.ndarray, factor: int) -> np.ndarray:
    """Box-average downscale by an integer factor (uint8 RGB stays uint8, float stays float32)."""
    if factor <= 1:
        return array
    from PIL import Image

    if array.dtype == np.uint8:
        return np.asarray(Image.fromarray(array).reduce(factor))
    return np.asarray(Image.fromarray(array.astype(np.float32), mode="F").reduce(factor))


def make_sample(
    suite: str,
    image_id: str,
    rainy: np.ndarray,
    output: np.ndarray,
    clean: np.ndarray | None = None,
    rain: np.ndarray | None = None,
    threshold: float = 50,
    scores: dict | None = None,
    max_side: int = THUMBNAIL_SIDE,
) -> Sample:
    """A report sample from full-size uint8 HxWx3 images and the rain layer HxW in [0, 255]."""
    factor = math.ceil(max(rainy.shape[:2]) / max_side)
    error = mask = None
    if clean is not None:
        error = _shrink(np.abs(output.astype(np.float32) - clean.astype(np.float32)).mean(axis=-1), factor)
    if rain is not None:
        mask = _shrink((rain > threshold).astype(np.float32), factor) > 0.5
    return Sample(
        suite=suite,
        image_id=image_id,
        rainy=_shrink(rainy, factor),
        output=_shrink(output, factor),
        clean=None if clean is None else _shrink(clean, factor),
        error=error,
        mask=mask,
        scores=dict(scores or {}),
    )


def _fmt(value: object) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"
    return "-"


def table_rows(metrics: dict, suites: list[str]) -> list[list[str]]:
    """[label, value per suite] for every TABLE_METRICS key some suite has."""
    return [
        [label, *(_fmt(metrics.get(f"{key}/{suite}")) for suite in suites)]
        for key, label in TABLE_METRICS
        if any(f"{key}/{suite}" in metrics for suite in suites)
    ]


def _score_title(name: str, scores: dict, key: str) -> str:
    ours, theirs = scores.get(key), scores.get(f"{key}_input")
    if ours is None or not math.isfinite(ours):
        return name
    return f"{name}\n{ours:.2f} dB (input {theirs:.2f})"


def _draw_sample(axes, sample: Sample) -> None:
    import matplotlib.colors

    cmap = matplotlib.colormaps["magma"].with_extremes(bad="#d0d0d0")
    norm = matplotlib.colors.Normalize(0.0, ERROR_VMAX)
    panels = [(sample.rainy, f"{sample.suite} / {sample.image_id}\nrainy"), (sample.output, _score_title("output: PSNR", sample.scores, "psnr"))]
    if sample.clean is not None:
        panels.append((sample.clean, "clean"))
    if sample.error is not None and sample.mask is not None:
        panels.append((np.ma.masked_where(~sample.mask, sample.error), _score_title("|error| in rain", sample.scores, "psnr_rain")))
        panels.append((np.ma.masked_where(sample.mask, sample.error), _score_title("|error| on background", sample.scores, "psnr_bg")))
    elif sample.error is not None:
        panels.append((sample.error, "|error| (no mask)"))
    for ax in axes:
        ax.axis("off")
    for ax, (image, title) in zip(axes, panels):
        if image.ndim == 2:
            ax.imshow(image, cmap=cmap, norm=norm, interpolation="nearest")
        else:
            ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=8)


def report_subtitle(model_type: str, model_path: Path, root: Path) -> str:
    """Which model the report shows: its type, the sha256 of its weights (the registry's identity:
    `raincheck registry show` lists it per version) and the git commit, `(modified)` when the files
    that define a run differ from it. The gate verdict comes later (registration): in the MLflow
    version's description and decision.json."""
    from pipeline.lineage import file_sha256, git_commit

    commit, dirty = git_commit(Path(root))
    weights = file_sha256(model_path)[:12] if Path(model_path).is_file() else "missing"
    return f"{model_type} model, weights sha256 {weights}, commit {commit[:8]}{' (modified)' if dirty else ''}"


def _colour_bar(figure, ax, cmap, norm) -> None:
    """A horizontal colour bar right of the table (which keeps the left 78 %, so they never
    overlap): the one scale every error map uses."""
    import matplotlib.cm

    cax = ax.inset_axes([0.81, 0.88, 0.18, 0.05])
    bar = figure.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax, orientation="horizontal", extend="max")
    bar.set_label("|output - clean|, grey levels\n(grey: the other region)", fontsize=7)
    bar.ax.tick_params(labelsize=7)


def render_report(path: Path | str, metrics: dict, suites: list[str], samples: list[Sample], subtitle: str = "") -> None:
    """Write the report PNG atomically: metric table (flat `<metric>/<suite>` keys), a colour bar
    for the error maps, and samples; `subtitle` (report_subtitle) goes under the title."""
    import matplotlib.colors
    from matplotlib.figure import Figure

    rows = table_rows(metrics, suites)
    table_height = 0.6 + 0.22 * (len(rows) + 1)
    figure = Figure(figsize=(13, table_height + 2.8 * len(samples)), dpi=80)
    grid = figure.add_gridspec(1 + len(samples), 5, height_ratios=[table_height] + [2.8] * len(samples))
    table_ax = figure.add_subplot(grid[0, :])
    table_ax.axis("off")
    table_ax.set_title("raincheck evaluation" + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    _colour_bar(figure, table_ax, matplotlib.colormaps["magma"].with_extremes(bad="#d0d0d0"), matplotlib.colors.Normalize(0.0, ERROR_VMAX))
    if rows:
        suite_width = min(0.16, 0.56 / len(suites))
        table = table_ax.table(
            cellText=rows,
            colLabels=["metric", *suites],
            colWidths=[0.22] + [suite_width] * len(suites),
            loc="upper left",
            cellLoc="left",
        )
        table.auto_set_font_size(False)
        table.set_fontsize(8)
    for index, sample in enumerate(samples, start=1):
        _draw_sample([figure.add_subplot(grid[index, column]) for column in range(5)], sample)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})


def render_fullsize(path: Path | str, samples: list[Sample]) -> None:
    """fullsize.png: for each suite its median sample at 1:1 pixels, rainy | output | clean, so
    that blur or colour shifts a downscaled report hides are visible. Written atomically."""
    from PIL import Image, ImageDraw

    by_suite: dict[str, list[Sample]] = {}
    for sample in samples:
        by_suite.setdefault(sample.suite, []).append(sample)
    rows = [group[len(group) // 2] for group in by_suite.values()]
    gap, header = 6, 16
    width = max((3 * (s.rainy.shape[1] + gap) for s in rows), default=1)
    height = sum(header + s.rainy.shape[0] + gap for s in rows) or 1
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    top = 0
    for sample in rows:
        panels = [("rainy", sample.rainy), ("output", sample.output), ("clean", sample.clean)]
        for column, (title, image) in enumerate(panels):
            left = column * (sample.rainy.shape[1] + gap)
            label = f"{sample.suite} / {sample.image_id}: {title}" if column == 0 else title
            if title == "output" and math.isfinite(sample.scores.get("psnr", math.nan)):
                label += f" (PSNR {sample.scores['psnr']:.2f} dB)"
            draw.text((left + 2, top + 2), label, fill=(0, 0, 0))
            if image is not None:
                canvas.paste(Image.fromarray(image), (left, top + header))
        top += header + sample.rainy.shape[0] + gap
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="png")


RECON_TILES = 8  # tiles on recon.png
RECON_MEASURED = 4096  # at most this many validation patches are measured (evenly spaced): cheap on a big pool


def recon_tiles(patches: np.ndarray, measure: str, count: int = RECON_TILES) -> tuple[np.ndarray, np.ndarray]:
    """(indices into `patches`, their complexity): `count` uint8 (N, P, P, 3) patches at evenly
    spaced quantiles of the curation complexity `measure` (pipeline.curation.complexity, e.g.
    gradient), lowest first: the flattest patch, the busiest and evenly between, so recon.png shows
    what the prior can and cannot draw. Deterministic (stable sort, no randomness)."""
    from pipeline.curation.complexity import MEASURE_FUNCTIONS

    measured = np.linspace(0, len(patches) - 1, min(RECON_MEASURED, len(patches))).round().astype(int)
    values = np.concatenate([MEASURE_FUNCTIONS[measure](np.asarray(patches[measured[i : i + 256]]))
                             for i in range(0, len(measured), 256)]) if len(measured) else np.zeros(0)
    order = np.argsort(values, kind="stable")
    picked = order[np.linspace(0, len(order) - 1, min(count, len(order))).round().astype(int)]
    return measured[picked], values[picked]


def recon_report(patches: np.ndarray, measure: str, redraw) -> np.ndarray:
    """recon.png: the recon_tiles of `patches` over their redrawing (`redraw`: uint8 (K, P, P, 3) ->
    float NCHW in [0, 1]), each tile labelled with its complexity and PSNR (recon_sheet)."""
    tiles, complexity = recon_tiles(patches, measure)
    originals = np.asarray(patches[tiles])
    return recon_sheet(originals, redraw(originals), complexity, measure)


def recon_sheet(originals: np.ndarray, recon, complexity: np.ndarray | None = None, measure: str = "complexity") -> np.ndarray:
    """uint8 RGB image: originals (N, h, w, 3 uint8) over their reconstructions (recon: float NCHW
    in [0, 1]), scaled x2, rows labelled; under each tile its `measure` value (when `complexity`,
    float (N,), is given) and the reconstruction's PSNR (dB)."""
    from PIL import Image, ImageDraw

    from pipeline.evaluation.metrics import psnr

    drawn = (recon.permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    sheet = np.concatenate([np.concatenate(list(originals), axis=1), np.concatenate(list(drawn), axis=1)], axis=0)
    sheet, tile, label = sheet.repeat(2, axis=0).repeat(2, axis=1), originals.shape[2] * 2, 110
    footer = 16 if complexity is None else 30
    canvas = Image.new("RGB", (label + sheet.shape[1], sheet.shape[0] + footer), (255, 255, 255))
    canvas.paste(Image.fromarray(sheet), (label, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, sheet.shape[0] // 4 - 6), "original", fill=(0, 0, 0))
    draw.text((4, 3 * sheet.shape[0] // 4 - 6), "prior's redrawing", fill=(0, 0, 0))
    for i, (original, mine) in enumerate(zip(originals, drawn)):  # the tile's PSNR: what the prior cannot draw
        lines = ([f"{measure} {complexity[i]:.3g}"] if complexity is not None else []) + [f"{psnr(mine, original):.1f} dB"]
        draw.text((label + i * tile + 2, sheet.shape[0] + 2), "\n".join(lines), fill=(0, 0, 0))
    return np.asarray(canvas)
