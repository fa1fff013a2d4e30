"""`{registry}/report.png`: the evaluation report under a title line that only registration knows.

The evaluate step draws `{evaluation}/report.png` before the model is registered, so its title names
the weights and the commit but not the version, its aliases or the gate's verdict. After the
registration this module writes the same picture with one line above it,

    raincheck-derain v3 (candidate, not promoted) · commit 1a2b3c4d · gate FAIL: psnr_bg_gain/screen = -8.94 < floor 0 (+2 more)

on a green (passed), red (failed) or grey (no gate) band, stores the line as the PNG's `Title`
text chunk (for scripts and tests) and logs the file to the version's MLflow run under
`reports/registry`. The pixels of the evaluation report are copied unchanged below the band.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import layout
from pipeline.io import atomic_path

REPORT = layout.REPORT
BAND_PX = 34  # height of the title band, pixels
DPI = 80  # the evaluation report's own (pipeline/evaluation/report.py): 1 figure pixel = 1 image pixel
BAND_COLOURS = {"PASS": "#d9f2d9", "FAIL": "#f8d7d7", "NONE": "#e6e6e6"}


def gate_words(result: dict) -> tuple[str, str]:
    """(PASS | FAIL | NONE, what to say after it) from a registration result (decision.json):
    the first failing rule's reason, and how many more failed."""
    if result.get("gate") == "none":
        return "NONE", "register.gates is none"
    if result.get("promote"):
        return "PASS", ""
    failed = [reason[len("FAIL"):].strip() for reason in result.get("reasons") or [] if reason.startswith("FAIL")]
    if not failed:
        return "FAIL", "no rule named"
    first = failed[0] if len(failed[0]) <= 90 else failed[0][:87] + "..."
    return "FAIL", first + (f" (+{len(failed) - 1} more)" if len(failed) > 1 else "")


def registry_title(result: dict, commit: str, dirty: bool = False) -> str:
    """The title line: model name and version, where its aliases put it, the commit it was
    registered from (first 8 hex, `(modified)` when its defining files differed) and the verdict."""
    verdict, why = gate_words(result)
    aliases = list(result.get("aliases") or [])
    if "champion" not in aliases:  # passed but not champion: another was promoted or it was rolled back
        aliases.append("not promoted" if verdict == "FAIL" else "not champion")
    return (f"{result['model_name']} v{result['version']} ({', '.join(aliases)}) · commit {commit[:8]}"
            f"{' (modified)' if dirty else ''} · gate {verdict}{': ' + why if why else ''}")


def titled_report(source: Path, target: Path, title: str, verdict: str) -> None:
    """Write `target` atomically: `source` (a PNG) below a BAND_PX band holding `title`."""
    from matplotlib.figure import Figure
    from PIL import Image

    with Image.open(source) as image:
        pixels = np.asarray(image.convert("RGB"))
    height, width = pixels.shape[:2]
    figure = Figure(figsize=(width / DPI, (height + BAND_PX) / DPI), dpi=DPI, facecolor=BAND_COLOURS[verdict])
    figure.figimage(pixels, xo=0, yo=0, origin="upper")  # bottom-left corner at the figure's: the band stays on top
    figure.text(0.5, 1 - BAND_PX / 2 / (height + BAND_PX), title, ha="center", va="center", fontsize=11, weight="bold")
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI, facecolor=figure.get_facecolor(), metadata={"Title": title, "Software": None})


def write_registry_report(client, params, root: Path, result: dict) -> Path | None:
    """`{registry}/report.png` for the version `result` (run_register's) describes, logged to its
    MLflow run; None (nothing written) when the evaluation report is missing."""
    source = Path(root) / params.paths.evaluation / REPORT
    if not source.is_file():
        return None
    tags = client.get_model_version(result["model_name"], result["version"]).tags
    title = registry_title(result, tags.get("git_commit", "unknown"), tags.get("git_dirty") == "true")
    target = Path(root) / params.paths.registry / REPORT
    titled_report(source, target, title, gate_words(result)[0])
    if result.get("run_id"):
        client.log_artifact(result["run_id"], str(target), artifact_path="reports/registry")
    return target
