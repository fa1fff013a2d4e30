"""`raincheck plots`: the dvc.yaml plots as static PNG files and an index.html, viewable offline.

`dvc plots show` writes an HTML page that loads vega from a public CDN: offline it is blank. Here
`dvc plots show --json` gives each plot's Vega-Lite spec with its data inlined, and vl-convert
(vega bundled in the wheel, no network) renders it to PNG. Image plots (the report PNGs) are
copied. index.html only shows <img> tags: no script, nothing fetched. interactive.html draws the
same specs in the browser (tooltips, export) with vega, vega-lite and vega-embed from vega-bundle.js
beside it (vl-convert's own bundle, a classic script: file:// pages may load it, unlike a module).
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
    """Write one PNG per plot of dvc.yaml (vega plots rendered at `scale`, images copied),
    out/index.html and, when there are vega plots, out/interactive.html + out/vega-bundle.js;
    returns the files written (index.html last). Raises PlotsError when there is
    no plot data yet (run the pipeline first)."""
    import vl_convert

    out.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, Path]] = []
    specs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, entries in dvc_plots(root, Path(scratch)).items():
            for entry in entries[:1]:  # the workspace revision
                if entry.get("type") == "vega" and entry.get("content"):
                    target = out / f"{slug(name)}.png"
                    target.write_bytes(vl_convert.vegalite_to_png(entry["content"], scale=scale))
                    specs[name] = entry["content"]
                elif entry.get("type") == "image" and Path(root, entry.get("url", "")).is_file():
                    target = out / f"{slug(name)}.png"
                    shutil.copyfile(Path(root, entry["url"]), target)
                else:
                    continue
                written.append((name, target))
    if not written:
        raise PlotsError(f"no plot data in {root}: run the pipeline first (`make run` or `make repro`)")
    interactive = _interactive_page(out, written, specs, vl_convert) if specs else []
    link = '<p><a href="interactive.html">interactive charts</a> (scripts from vega-bundle.js here)</p>\n' if specs else ""
    index = out / "index.html"
    figures = "\n".join(_figure(name, f'<img src="{path.name}" alt="{html.escape(name)}">') for name, path in written)
    _write_text(index, f"{PAGE_HEAD}<title>raincheck plots</title>\n{STYLE}\n{link}{figures}\n")
    return [path for _, path in written] + interactive + [index]


PAGE_HEAD = "<!doctype html><meta charset=utf-8>"
STYLE = "<style>img{max-width:100%}figure{margin:1em 0}figcaption{font:bold 14px sans-serif}</style>"
BUNDLE = "vega-bundle.js"
# vega-embed's menu without "Open in Vega Editor", the one entry that goes to the network
EMBED_OPTIONS = {"renderer": "svg", "actions": {"export": True, "source": True, "compiled": False, "editor": False}}


def _figure(name: str, body: str) -> str:
    return f"<figure><figcaption>{html.escape(name)}</figcaption>{body}</figure>"


def _write_text(path: Path, text: str) -> None:
    from pipeline.io import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def _interactive_page(out: Path, written: list[tuple[str, Path]], specs: dict[str, dict], vl_convert) -> list[Path]:
    """out/vega-bundle.js (vega + vega-lite + vega-embed, about 1 MB) and out/interactive.html:
    each vega plot drawn by vega-embed as an <svg> in the browser, each image plot as <img>.
    Nothing is fetched: the data is inline, the scripts are the local bundle."""
    _write_text(out / BUNDLE, vl_convert.javascript_bundle())
    bodies, charts = [], []
    for name, path in written:
        if name in specs:
            bodies.append(_figure(name, f'<div class="chart" id="chart{len(charts)}"></div>'))
            charts.append(specs[name])
        else:
            bodies.append(_figure(name, f'<img src="{path.name}" alt="{html.escape(name)}">'))
    # "</" escaped: a value holding "</script>" must not end the script element
    data = json.dumps(charts).replace("</", "<\\/")
    script = (f"const specs = {data};\nconst options = {json.dumps(EMBED_OPTIONS)};\n"
              "specs.forEach((spec, i) => vegaEmbed('#chart' + i, spec, options).catch(error => {\n"
              "  document.getElementById('chart' + i).textContent = 'could not draw this chart: ' + error;\n}));\n")
    page = out / "interactive.html"
    _write_text(page, f'{PAGE_HEAD}<title>raincheck plots (interactive)</title>\n{STYLE}\n<script src="{BUNDLE}"></script>\n'
                      '<p><a href="index.html">static images</a></p>\n' + "\n".join(bodies) + f"\n<script>\n{script}</script>\n")
    return [out / BUNDLE, page]
