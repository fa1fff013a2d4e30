"""report.png: what the curated training set looks like, for a person to check at a glance.

Top: a contact sheet of selected training patches ordered by complexity (smoothest top-left).
Middle: histograms of patch complexity per split, the selected training patches, and the
complexity bin edges the selection used. Bottom: the counts and the data-check verdict.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.curation.split import SPLITS
from pipeline.io import atomic_path

SHEET_SIDE = 8  # contact sheet is at most 8 × 8 patches


def sheet_rows(values: np.ndarray, limit: int = SHEET_SIDE**2) -> np.ndarray:
    """Indices of up to `limit` items spread evenly over the ranks of `values`, lowest first."""
    order = np.argsort(values, kind="stable")
    if len(order) <= limit:
        return order
    return order[np.linspace(0, len(order) - 1, limit).round().astype(int)]


def contact_sheet(patches: np.ndarray, columns: int = SHEET_SIDE, gap: int = 2) -> np.ndarray:
    """Tile uint8 (K, P, P, 3) row-major into one uint8 image with white gaps."""
    count, size = len(patches), patches.shape[1]
    rows = max(1, -(-count // columns))
    cols = min(columns, max(count, 1))
    sheet = np.full((rows * (size + gap) - gap, cols * (size + gap) - gap, 3), 255, dtype=np.uint8)
    for i, patch in enumerate(patches):
        top, left = (i // columns) * (size + gap), (i % columns) * (size + gap)
        sheet[top : top + size, left : left + size] = patch
    return sheet


def write_report(
    path: Path,
    manifest,
    measure: str,
    edges: np.ndarray,
    sheet_patches: np.ndarray,
    sheet_values: np.ndarray,
    counts: dict[str, object],
    title: str,
) -> None:
    """Render report.png.

    manifest: pandas DataFrame with columns split, selected and `measure` (one row per patch).
    edges: inner complexity bin edges. sheet_patches: uint8 (K, P, P, 3) ordered by complexity,
    sheet_values: their measure values (K,). counts: label -> value lines for the counts panel.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 12), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(3, 1, height_ratios=[6, 3, 1.3])
    figure.suptitle(title, fontsize=12)

    _sheet_panel(figure.add_subplot(grid[0]), sheet_patches, sheet_values, measure)
    _histogram_panel(figure.add_subplot(grid[1]), manifest, measure, edges)
    _counts_panel(figure.add_subplot(grid[2]), counts)

    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=90, metadata={"Software": None})  # no version: same bytes across installs


def _sheet_panel(axes, sheet_patches: np.ndarray, sheet_values: np.ndarray, measure: str) -> None:
    """The selected training patches as one contact sheet, ordered by complexity."""
    if len(sheet_patches):
        axes.imshow(contact_sheet(sheet_patches), interpolation="nearest")
        axes.set_title(
            f"{len(sheet_patches)} selected training patches, ordered by {measure} "
            f"(row-major, {sheet_values.min():.3g} → {sheet_values.max():.3g})",
            fontsize=10,
        )
    else:
        axes.text(0.5, 0.5, "no training patches selected", ha="center", va="center")
    axes.axis("off")


def _histogram_panel(axes, manifest, measure: str, edges: np.ndarray) -> None:
    """Patch complexity per split, the selected patches shaded, the bin edges dashed."""
    values = manifest[measure].to_numpy(dtype=float)
    if len(values):
        bins = np.histogram_bin_edges(values, bins=40)
        for split in SPLITS:
            part = values[(manifest["split"] == split).to_numpy()]
            axes.hist(part, bins=bins, histtype="step", linewidth=1.5, label=f"{split} ({len(part)})")
        chosen = values[manifest["selected"].to_numpy(dtype=bool)]
        axes.hist(chosen, bins=bins, alpha=0.35, label=f"selected for training ({len(chosen)})")
        for edge in edges:
            axes.axvline(edge, color="grey", linestyle="--", linewidth=1)
    axes.set_xlabel(f"patch {measure} (dashed: complexity bin edges)")
    axes.set_ylabel("patches")
    axes.legend(fontsize=9)


def _counts_panel(axes, counts: dict[str, object]) -> None:
    """label: value lines in two monospace columns."""
    axes.axis("off")
    items = list(counts.items())
    half = -(-len(items) // 2)
    for column, chunk in enumerate((items[:half], items[half:])):
        body = "\n".join(f"{label:<30} {value}" for label, value in chunk)
        axes.text(0.02 + 0.5 * column, 1.0, body, va="top", family="monospace", fontsize=9)
