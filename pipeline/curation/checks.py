"""Diversity and leakage gates on the curated tables, as Great Expectations 1.x suites.

Three suites run in one ephemeral GX context, each on a pandas DataFrame passed as the batch:

- photos:  one row per kept photo (photos.csv): no nulls, unique image_id and perceptual hash,
           known split names, every measure inside its documented range.
- patches: one row per patch (manifest.csv): no nulls, unique patch_id, known split names,
           measures in range, at least `min_train_patches` selected training patches, at least
           `min_complexity_bins` complexity bins populated by the training split.
- splits:  the distinct (image_id, split) pairs of both tables: no image_id in two splits, and
           at least `min_<split>_photos` distinct photos in each split.

Every expectation carries meta `{check, threshold, key}` (key: the params.yaml key that sets the
threshold, if any), so a failure can say what failed, by how much, and what to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import CurationChecks
from pipeline.curation.complexity import MEASURE_RANGES, MEASURES
from pipeline.curation.split import SPLITS

PHOTO_COLUMNS = ("image_id", "split", "phash", *MEASURES)
PATCH_COLUMNS = ("patch_id", "image_id", "split", "x", "y", "selected", "complexity_bin", *MEASURES)
CHECKS_KEY = "curate.checks"


class DataCheckError(ValueError):
    """The curated data failed its gates; the message lists each failed expectation."""


@dataclass(frozen=True)
class CheckResult:
    suite: str
    expectation: str
    column: str
    check: str
    success: bool
    observed: str
    threshold: str
    key: str

    def line(self) -> str:
        key = f" (set by {self.key})" if self.key else ""
        return f"[{self.suite}] {self.check}: observed {self.observed}; required {self.threshold}{key}"


def run_checks(photos, manifest, checks: CurationChecks) -> list[CheckResult]:
    """Validate the photo table and the patch manifest (pandas DataFrames); one result per expectation.

    photos needs PHOTO_COLUMNS, manifest needs PATCH_COLUMNS (`selected` bool, `complexity_bin`
    int). Nothing is raised here for failed expectations: see `raise_on_failure`.
    """
    import pandas as pd

    for name, table, columns in (("photos", photos, PHOTO_COLUMNS), ("manifest", manifest, PATCH_COLUMNS)):
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise ValueError(f"{name} table lacks columns {missing}")
    pairs = pd.concat([photos[["image_id", "split"]], manifest[["image_id", "split"]]]).drop_duplicates()
    tables = {
        "photos": (photos, _photo_expectations()),
        "patches": (manifest, _patch_expectations(checks)),
        "splits": (pairs.reset_index(drop=True), _split_expectations(checks)),
    }
    return _validate(tables)


def raise_on_failure(results: list[CheckResult], context: str = "") -> None:
    """Raise DataCheckError naming every failed expectation, its observed value and threshold.

    `context` (e.g. where the pool's photos went) is appended to the message as a last line.
    """
    failed = [r for r in results if not r.success]
    if failed:
        lines = "\n".join(f"  - {r.line()}" for r in failed)
        tail = f"\n{context}" if context else ""
        raise DataCheckError(f"curated data failed {len(failed)} of {len(results)} checks:\n{lines}{tail}")


def results_json(results: list[CheckResult]) -> dict:
    """checks.json content: overall success plus one entry per expectation."""
    return {
        "success": all(r.success for r in results),
        "failed": sum(not r.success for r in results),
        "total": len(results),
        "results": [r.__dict__ for r in results],
    }


# ----------------------------------------------------------------------------- the suites
def _meta(check: str, threshold: str, key: str = "") -> dict:
    return {"check": check, "threshold": threshold, "key": key}


def _common(columns: tuple[str, ...]) -> list:
    import great_expectations as gx

    exp = gx.expectations
    found = [exp.ExpectColumnValuesToNotBeNull(column=c, meta=_meta(f"{c} has no nulls", "no nulls")) for c in columns]
    found.append(
        exp.ExpectColumnValuesToBeInSet(
            column="split", value_set=list(SPLITS), meta=_meta("split names are known", f"one of {list(SPLITS)}")
        )
    )
    for name in MEASURES:
        low, high = MEASURE_RANGES[name]
        found.append(
            exp.ExpectColumnValuesToBeBetween(
                column=name, min_value=low, max_value=high,
                meta=_meta(f"{name} inside its documented range", f"in [{low:g}, {high:g}]"),
            )
        )
    return found


def _photo_expectations() -> list:
    import great_expectations as gx

    exp = gx.expectations
    return [
        *_common(PHOTO_COLUMNS),
        exp.ExpectColumnValuesToBeUnique(column="image_id", meta=_meta("image_id is unique", "no repeats")),
        exp.ExpectColumnValuesToBeUnique(
            column="phash", meta=_meta("perceptual hash (digest) is unique: no duplicate photos", "no repeats")
        ),
    ]


def _patch_expectations(checks: CurationChecks) -> list:
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    exp = gx.expectations
    train = Column("split") == "train"
    return [
        *_common(PATCH_COLUMNS),
        exp.ExpectColumnValuesToBeUnique(column="patch_id", meta=_meta("patch_id is unique", "no repeats")),
        exp.ExpectColumnValuesToBeBetween(column="x", min_value=0, meta=_meta("x is not negative", ">= 0")),
        exp.ExpectColumnValuesToBeBetween(column="y", min_value=0, meta=_meta("y is not negative", ">= 0")),
        exp.ExpectTableRowCountToBeBetween(
            min_value=checks.min_train_patches,
            row_condition=train & (Column("selected") == True),  # noqa: E712 (a GX condition, not a comparison)
            meta=_meta(
                "selected training patches", f">= {checks.min_train_patches}", f"{CHECKS_KEY}.min_train_patches"
            ),
        ),
        exp.ExpectColumnUniqueValueCountToBeBetween(
            column="complexity_bin",
            min_value=checks.min_complexity_bins,
            row_condition=train,
            meta=_meta(
                "complexity bins populated by the training split (too uniform if low)",
                f">= {checks.min_complexity_bins}",
                f"{CHECKS_KEY}.min_complexity_bins",
            ),
        ),
    ]


def _split_expectations(checks: CurationChecks) -> list:
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    exp = gx.expectations
    found = [
        exp.ExpectColumnValuesToBeUnique(
            column="image_id", meta=_meta("photos in more than one split (leakage)", "none")
        )
    ]
    for split in SPLITS:
        minimum = getattr(checks, f"min_{split}_photos")
        found.append(
            exp.ExpectColumnUniqueValueCountToBeBetween(
                column="image_id",
                min_value=minimum,
                row_condition=Column("split") == split,
                meta=_meta(f"distinct photos in {split}", f">= {minimum}", f"{CHECKS_KEY}.min_{split}_photos"),
            )
        )
    return found


# ----------------------------------------------------------------------------- running GX
def _validate(tables: dict) -> list[CheckResult]:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("curation")
    results: list[CheckResult] = []
    for name, (frame, expectations) in tables.items():
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("whole")
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        validation = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        outcome = validation.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
        results.extend(_result(name, item) for item in outcome.results)
    return results


def _result(suite: str, item) -> CheckResult:
    config = item.expectation_config
    meta = config.meta or {}
    return CheckResult(
        suite=suite,
        expectation=config.type,
        column=str(config.kwargs.get("column", "")),
        check=meta.get("check", config.type),
        success=bool(item.success),
        observed=_observed(item),
        threshold=meta.get("threshold", ""),
        key=meta.get("key", ""),
    )


def _observed(item) -> str:
    """The observed value in words: an aggregate's value, or how many rows broke a row-wise rule."""
    if item.exception_info and item.exception_info.get("raised_exception"):
        return f"error: {item.exception_info.get('exception_message')}"
    result = item.result or {}
    if "observed_value" in result:
        return str(result["observed_value"])
    if "unexpected_count" in result:
        count = result["unexpected_count"]
        if not count:
            return f"0 of {result.get('element_count')} rows break it"
        examples = sorted({str(v) for v in result.get("partial_unexpected_list") or []} - {"nan", "None"})[:5]
        return f"{count} of {result.get('element_count')} rows break it" + (f", e.g. {examples}" if examples else "")
    return "n/a"
