"""The curate step: {pool}/ -> {curated}/ (docs/dataflow.md).

Two streaming passes over the pool, so memory holds one photo's pixels at a time (plus one row
of numbers per patch), however large the pool:

1. measure: decode each photo once; perceptual hash, photo and per-patch complexity.
2. write (patch_files.py): decode only the photos that contribute, and write their selected
   training patches, validation patches and eval crops into files pre-sized with `open_memmap`.

Between the passes (numbers only): drop photos smaller than a patch, drop near-duplicates, split
by photo, bin complexity, select the training patches, and run the Great Expectations gates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import layout
from pipeline.config import Curate, Params
from pipeline.curation.checks import raise_on_failure, results_json, run_checks
from pipeline.curation.complexity import MEASURES, measure_all
from pipeline.curation.dedupe import dedupe, lossless_originals, perceptual_hash
from pipeline.curation.patch_files import EVAL_SPLITS, remove_stale_outputs, write_patches_and_crops
from pipeline.curation.patches import cut_patches, eval_crop_size, grid_positions, measure_patches
from pipeline.curation.pool import load_photo, pool_image_ids
from pipeline.curation.report import sheet_rows, write_report
from pipeline.curation.selection import complexity_bins, select_patches
from pipeline.curation.split import SPLITS, assign_splits
from pipeline.io import atomic_path, write_csv, write_json
from pipeline.seeds import numpy_rng


def run_curate(params: Params, root: Path) -> dict:
    """Measure, dedupe, split and select the pool's patches; gate them; write {curated}/.

    Returns the flat summary also written to summary.json. Raises DataCheckError (after writing
    checks.json, the tables, summary.json and report.png) when a data check fails, and
    ParamsError when the selection asks for more patches than its policy can supply.
    """
    cfg = params.curate
    pool, out = Path(root) / params.paths.pool, Path(root) / params.paths.curated
    image_ids = pool_image_ids(pool)
    lossless = lossless_originals(pool / layout.MANIFEST)  # ids; dedupe keeps them over lossy copies

    photo_rows, patch_data = _measure_pool(pool, image_ids, cfg)
    too_small = [r for r in photo_rows if min(r["width"], r["height"]) < cfg.patch_size]
    usable = [r for r in photo_rows if min(r["width"], r["height"]) >= cfg.patch_size]
    kept, duplicates = dedupe(
        [r["image_id"] for r in usable],
        [r["phash"] for r in usable],
        [r["width"] * r["height"] for r in usable],
        cfg.dedupe_max_distance,
        lossless=[r["image_id"] in lossless for r in usable],
    )
    split_of = assign_splits([[image_id] for image_id in kept], cfg.split.model_dump(), params.seed)

    photos = _photo_table(photo_rows, split_of, patch_data, cfg.eval_size)
    manifest, edges = _patch_manifest(photos, patch_data, cfg, params.seed)

    results = run_checks(photos, manifest, cfg.checks)
    write_json(out / layout.CHECKS, results_json(results))
    passed = all(r.success for r in results)
    if passed:
        write_patches_and_crops(pool, out, photos, manifest, cfg.patch_size, cfg.eval_crops)
    else:
        remove_stale_outputs(out)  # never leave patches that belong to an earlier manifest

    _write_tables(out, photos, manifest, too_small, duplicates, cfg.patch_size)

    summary = _summary(photo_rows, too_small, duplicates, photos, manifest, cfg, results)
    write_json(out / layout.SUMMARY, summary)
    _report(pool, out, photos, manifest, edges, cfg, summary, passed)
    raise_on_failure(
        results,
        f"pool {pool}: {len(photo_rows)} photos, {len(too_small)} smaller than a patch, {len(duplicates)} "
        f"near-duplicates, {len(photos)} kept (see {out / layout.REMOVED} and {out / layout.REPORT})",
    )
    return summary


def _write_tables(out: Path, photos, manifest, too_small: list[dict], duplicates: list[dict], patch_size: int) -> None:
    """photos.csv, the patch manifest.csv and removed.csv (too small or near-duplicate, by image id)."""
    small = f"smaller than curate.patch_size={patch_size}"
    removed = [{"image_id": r["image_id"], "reason": small} for r in too_small]
    removed += [{**row, "reason": "near-duplicate"} for row in duplicates]
    _write_frame(out / layout.PHOTOS, photos)
    _write_frame(out / layout.MANIFEST, manifest)
    removed.sort(key=lambda row: row["image_id"])
    write_csv(out / layout.REMOVED, removed, ["image_id", "reason", "duplicate_of", "distance"])


# ----------------------------------------------------------------------------- pass 1: measure
def _measure_pool(pool: Path, image_ids: list[str], cfg: Curate) -> tuple[list[dict], dict]:
    """Photo rows {image_id, width, height, phash, measures} and per photo (positions, patch measures)."""
    from tqdm import tqdm

    rows, patch_data = [], {}
    for image_id in tqdm(image_ids, desc="curate: measure", unit="photo"):
        image = load_photo(pool, image_id)
        height, width = image.shape[:2]
        positions = grid_positions(height, width, cfg.patch_size, cfg.patch_stride)
        patch_data[image_id] = (positions, measure_patches(image, positions, cfg.patch_size))
        if min(height, width) >= cfg.patch_size:
            measures = {name: float(value) for name, value in measure_all(image).items()}
        else:
            measures = dict.fromkeys(MEASURES)  # dropped later as smaller than a patch: not measured
        phash = perceptual_hash(image)
        rows.append({"image_id": image_id, "width": width, "height": height, "phash": phash, **measures})
    return rows, patch_data


def _photo_table(photo_rows: list[dict], split_of: dict[str, str], patch_data: dict, eval_size: int):
    """photos.csv: one row per kept photo with its split, patch count and eval crop edge (0 for train)."""
    import pandas as pd

    columns = ["image_id", "width", "height", "phash", *MEASURES]
    photos = pd.DataFrame([r for r in photo_rows if r["image_id"] in split_of], columns=columns)
    photos["split"] = photos["image_id"].map(split_of)
    photos["patches"] = [len(patch_data[i][0]) for i in photos["image_id"]]
    photos["eval_crop"] = [
        eval_crop_size(h, w, eval_size) if s in EVAL_SPLITS else 0
        for h, w, s in zip(photos["height"], photos["width"], photos["split"])
    ]
    return photos[["image_id", "split", "phash", "width", "height", "patches", "eval_crop", *MEASURES]]


def _patch_manifest(photos, patch_data: dict, cfg: Curate, seed: int):
    """One row per patch of the kept photos, photo-major; complexity bins and the selection filled in."""
    import pandas as pd

    frames = []
    for image_id, split in zip(photos["image_id"], photos["split"]):
        positions, values = patch_data[image_id]
        frame = pd.DataFrame(values, columns=list(MEASURES))
        frame.insert(0, "patch_id", [f"{image_id}-y{y:05d}-x{x:05d}" for y, x in positions])
        frame.insert(1, "image_id", image_id)
        frame.insert(2, "split", split)
        frame.insert(3, "x", positions[:, 1])
        frame.insert(4, "y", positions[:, 0])
        frames.append(frame)
    columns = ["patch_id", "image_id", "split", "x", "y", *MEASURES]
    manifest = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    bins, edges = complexity_bins(manifest[cfg.complexity].to_numpy(dtype=float), cfg.selection.bins)
    manifest["complexity_bin"] = bins

    candidates = np.flatnonzero((manifest["split"] == "train").to_numpy())
    chosen = select_patches(
        bins[candidates], cfg.selection.n_backgrounds, cfg.selection.policy, cfg.selection.bins,
        numpy_rng(seed, "curate", "select"),
    )
    selected = np.zeros(len(manifest), dtype=bool)
    selected[candidates[chosen]] = True
    manifest.insert(5, "selected", selected)
    # The content prior learns from the whole train split (capped, seeded), not from the selection:
    # the selection is the deraining training-set knob the study sweeps; the prior stays fixed.
    prior = np.zeros(len(manifest), dtype=bool)
    keep = len(candidates) if cfg.prior_patches == 0 else min(cfg.prior_patches, len(candidates))
    prior[np.sort(numpy_rng(seed, "curate", "prior").choice(candidates, size=keep, replace=False))] = True
    manifest.insert(6, "prior", prior)
    return manifest, edges


def _write_frame(path: Path, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


# ----------------------------------------------------------------------------- summary and report
def _summary(photo_rows, too_small, duplicates, photos, manifest, cfg: Curate, results) -> dict:
    """Flat numbers for summary.json (DVC metrics)."""
    measure = cfg.complexity
    selected = manifest["selected"].to_numpy(dtype=bool)
    train = (manifest["split"] == "train").to_numpy()
    summary: dict[str, float | int] = {
        "photos_in": len(photo_rows),
        "photos_too_small": len(too_small),
        "duplicates_removed": len(duplicates),
        "photos_kept": len(photos),
        "patches_total": len(manifest),
        "patches_selected": int(selected.sum()),
        "eval_crops_reduced": int(((photos["eval_crop"] > 0) & (photos["eval_crop"] < cfg.eval_size)).sum()),
        "complexity_bins_train": int(manifest.loc[train, "complexity_bin"].nunique()),
        "complexity_bins_selected": int(manifest.loc[selected, "complexity_bin"].nunique()),
        "checks_failed": sum(not r.success for r in results),
        "checks_total": len(results),
    }
    for split in SPLITS:
        summary[f"photos_{split}"] = int((photos["split"] == split).sum())
        summary[f"patches_{split}"] = int((manifest["split"] == split).sum())
    for label, mask in (("train", train), ("selected", selected)):
        values = manifest.loc[mask, measure].to_numpy(dtype=float)
        for name, q in (("p10", 0.1), ("median", 0.5), ("p90", 0.9)):
            value = round(float(np.quantile(values, q)), 4) if len(values) else float("nan")
            summary[f"complexity_{label}_{name}"] = value
    return summary


def _report(pool: Path, out: Path, photos, manifest, edges, cfg: Curate, summary: dict, passed: bool) -> None:
    selected = manifest[manifest["selected"]]
    sheet = selected.iloc[sheet_rows(selected[cfg.complexity].to_numpy(dtype=float))]
    patches = np.zeros((len(sheet), cfg.patch_size, cfg.patch_size, 3), dtype=np.uint8)
    for image_id, index in sheet.groupby("image_id", sort=False).indices.items():
        image = load_photo(pool, image_id)
        patches[index] = cut_patches(image, sheet.iloc[index][["y", "x"]].to_numpy(dtype=np.int64), cfg.patch_size)
    reduced = summary["eval_crops_reduced"]
    counts = {
        "photos in pool": summary["photos_in"],
        "smaller than a patch (dropped)": summary["photos_too_small"],
        "near-duplicates (dropped)": summary["duplicates_removed"],
        **{f"photos / patches {s}": f"{summary[f'photos_{s}']} / {summary[f'patches_{s}']}" for s in SPLITS},
        "selected training patches": summary["patches_selected"],
        "policy / bins / N": f"{cfg.selection.policy} / {cfg.selection.bins} / {cfg.selection.n_backgrounds or 'all'}",
        "complexity bins (train, sel.)": f"{summary['complexity_bins_train']}, {summary['complexity_bins_selected']}",
        "eval crops < eval_size": f"{reduced}" + (" (short side < eval_size)" if reduced else ""),
        "data checks": "passed" if passed else f"FAILED {summary['checks_failed']} of {summary['checks_total']}",
    }
    title = (
        f"raincheck curation — measure {cfg.complexity}, patches {cfg.patch_size}² "
        f"(stride {cfg.patch_stride}), checks {'passed' if passed else 'FAILED'}"
    )
    write_report(
        out / layout.REPORT, manifest, cfg.complexity, edges, patches,
        sheet[cfg.complexity].to_numpy(dtype=float), counts, title,
    )
