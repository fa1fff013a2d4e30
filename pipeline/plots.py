"""`raincheck plots`: the dvc.yaml plots as static PNG files and an index.html, viewable offline.

`dvc plots show` writes an HTML page that loads vega from a public CDN: offline it is blank. Here
`dvc plots show --json` gives each plot's Vega-Lite spec with its data inlined, and vl-convert
(vega bundled in the wheel, no network) renders it to PNG. Image plots (the report PNGs) are
copied. index.html only shows <img> tags: no script, nothing fetched.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


class PlotsError(RuntimeError):
    """`dvc plots show` failed or gave nothing to render; the message says why."""


def slug(name: str) -> str:
    """A file name for a plot name: `validation PSNR` -> `validation_PSNR`, `build/a/x.png` -> `build_a_x`."""
    return re.sub(r"[^A-Za-z0-9]+", "_", Path(name).with_suffix("").as_posix() if name.endswith(".png") else name).strip("_")


def dvc_plots(root: Path, scratch: Path) -> dict:
    """`dvc plots show --json` in `root`: {plot name: [entries]} (`type` vega with `content`, or
    image with `url`, a copy DVC makes under `scratch`, not in the workspace)."""
    command = [sys.executable, "-m", "dvc", "plots", "show", "--json", "--out", str(scratch)]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True)
    try:
        return json.loads(result.stdout)["data"]
    except (json.JSONDecodeError, KeyError):
        lines = result.stderr.strip().splitlines() or ["no output"]
        # DVC ends with a support banner; its ERROR line is the one that says what is wrong
        reason = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1])
        raise PlotsError(f"`dvc plots show --json` failed in {root} (exit {result.returncode}): {reason}") from None


def render(root: Path, out: Path, scale: float = 2.0) -> list[Path]:
    """Write one PNG per plot of dvc.yaml (vega plots rendered at `scale`, images copied) and
    out/index.html; returns the files written (index.html last). Raises PlotsError when there is
    no plot data yet (run the pipeline first)."""
    import vl_convert

    out.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, Path]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, entries in dvc_plots(root, Path(scratch)).items():
            for entry in entries[:1]:  # the workspace revision
                if entry.get("type") == "vega" and entry.get("content"):
                    target = out / f"{slug(name)}.png"
                    target.write_bytes(vl_convert.vegalite_to_png(entry["content"], scale=scale))
                elif entry.get("type") == "image" and Path(root, entry.get("url", "")).is_file():
                    target = out / f"{slug(name)}.png"
                    shutil.copyfile(Path(root, entry["url"]), target)
                else:
                    continue
                written.append((name, target))
    if not written:
        raise PlotsError(f"no plot data in {root}: run the pipeline first (`make run` or `make repro`)")
    index = out / "index.html"
    figures = "\n".join(f'<figure><figcaption>{html.escape(name)}</figcaption><img src="{path.name}" alt="{html.escape(name)}"></figure>'
                        for name, path in written)
    index.write_text("<!doctype html><meta charset=utf-8><title>raincheck plots</title>\n<style>img{max-width:100%}"
                     "figure{margin:1em 0}figcaption{font:bold 14px sans-serif}</style>\n" + figures + "\n")
    return [path for _, path in written] + [index]
