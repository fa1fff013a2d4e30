"""Offline plots (`raincheck plots`), every subcommand's own --help text and `make help`.
Real git + DVC in a tmp repository, real vl-convert; no network used (proxies point nowhere)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _offline_env(tmp_path: Path) -> dict:
    dead = "http://127.0.0.1:9"  # any download attempt fails fast instead of reaching a CDN
    return {**os.environ, "PYTHONPATH": str(ROOT), "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead,
            "https_proxy": dead, "NO_PROXY": "", "DVC_NO_ANALYTICS": "1", "HOME": str(tmp_path / "home")}


def _new_repo(tmp_path: Path, templates: bool = True) -> tuple[Path, dict]:
    """(repo, offline env): a git + DVC repository holding this project's dvc.yaml and params.yaml,
    with the custom plot templates unless `templates` is False."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    env = _offline_env(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True, env=env)
    if templates:  # tracked under .dvc/plots; `dvc init` only makes an empty .dvc
        shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    return repo, env


def _per_image_csv(repo: Path) -> None:
    """3 seen images the model improved, 2 unseen it made worse, 2 clean ones whose input is the
    clean image itself (the 100 dB cap) and an empty rain mask (nan): only 5 points are plotted."""
    rows = [("seen", i, 25 + i, 15 + i, 22 + i, 12 + i) for i in range(3)] + \
           [("unseen", i, 12 + i, 14 + i, 11 + i, 13 + i) for i in range(2)] + \
           [("clean", i, 40 + i, 100.0, "nan", "nan") for i in range(2)]
    (repo / "build/evaluation").mkdir(parents=True, exist_ok=True)
    (repo / "build/evaluation/per_image.csv").write_text(
        "suite,image_id,psnr,psnr_input,psnr_rain,psnr_rain_input\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, np.ndarray, subprocess.CompletedProcess]:
    """(repo, the recon.png it holds, the `raincheck plots` run): training logs, a prior log and
    recon.png, per-image scores, rendered once for the tests below."""
    tmp_path = tmp_path_factory.mktemp("plots")
    repo, env = _new_repo(tmp_path)
    (repo / "build/model").mkdir(parents=True)
    (repo / "build/prior").mkdir(parents=True)
    rows = "\n".join(f"{s},{1 / s},{20 + s / 100},{30 + s / 100}" for s in range(50, 1550, 50))
    (repo / "build/model/log.csv").write_text("step,loss,psnr_rain/val,psnr_bg/val\n" + rows + "\n")
    (repo / "build/prior/log.csv").write_text("step,loss,val_recon_psnr\n20,1,20\n40,0.5,22\n")
    recon = np.random.default_rng(0).integers(0, 255, (24, 40, 3), dtype=np.uint8)
    Image.fromarray(recon).save(repo / "build/prior/recon.png")
    _per_image_csv(repo)
    result = subprocess.run([sys.executable, "-m", "pipeline", "plots", "--root", str(repo)], capture_output=True, text=True, env=env)
    return repo, recon, result


@pytest.mark.integration
def test_plots_render_to_png_offline(rendered):
    repo, recon, result = rendered
    assert result.returncode == 0, result.stderr[-2000:]
    out = repo / "build" / "plots"
    for name in ("training_loss", "validation_PSNR", "prior_reconstruction_PSNR", "per_image_PSNR_by_suite"):
        data = (out / f"{name}.png").read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(out / f"{name}.png") as image:
            assert image.width > 300 and image.height > 200
            pixels = np.asarray(image.convert("L"))
        assert pixels.min() < 100 and pixels.max() > 200  # drawn on, not a blank page
    assert np.array_equal(np.asarray(Image.open(out / "build_prior_recon.png").convert("RGB")), recon)  # image plots copied
    index = (out / "index.html").read_text()
    assert "<script" not in index and "http" not in index and 'src="training_loss.png"' in index
    assert 'href="interactive.html"' in index
    page = (out / "interactive.html").read_text()
    # the only script it loads is the bundle beside it: nothing from a CDN
    assert re.findall(r"<script[^>]*\bsrc=\"([^\"]*)\"", page) == ["vega-bundle.js"] and "cdn" not in page.lower()
    assert (out / "vega-bundle.js").stat().st_size > 100_000 and "vegaEmbed" in (out / "vega-bundle.js").read_text()
    assert not (repo / "dvc_plots").exists()  # DVC's own HTML/copies stay out of the workspace
    assert "index.html or " in result.stdout and "interactive.html" in result.stdout


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package `chromium` (.ci/run installs it)
# Headless, offline: every http(s) request goes to a dead proxy and no host name resolves.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
                  "--virtual-time-budget=5000", "--window-size=1200,900")


def _open_in_chromium(page: Path, scratch: Path) -> tuple[str, np.ndarray, str]:
    """(DOM after the scripts ran, screenshot uint8 HxWx3, Chromium's net log) of a file:// page."""
    scratch.mkdir()
    command = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={scratch / 'profile'}", f"--screenshot={scratch / 'shot.png'}",
               f"--log-net-log={scratch / 'net.json'}", "--dump-dom", page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(scratch / "shot.png") as shot:
        pixels = np.asarray(shot.convert("RGB"))
    return result.stdout, pixels, (scratch / "net.json").read_text()


@pytest.mark.integration
@pytest.mark.skipif(not CHROMIUM.is_file(), reason="chromium is not installed: apt-get install chromium")
def test_plot_pages_render_in_headless_chromium_without_network(rendered, tmp_path):
    """Both pages, opened as file:// in Chromium with the network cut: interactive.html's charts are
    drawn (an <svg class="marks"> per vega plot, coloured lines on screen), index.html's images load."""
    repo, _, result = rendered
    assert result.returncode == 0, result.stderr[-2000:]
    out = repo / "build" / "plots"
    dom, shot, net_log = _open_in_chromium(out / "interactive.html", tmp_path / "interactive")
    charts = (out / "interactive.html").read_text().count('class="chart"')
    assert charts >= 4 and dom.count('class="marks"') == charts, dom[-2000:]
    assert ">could not draw" not in dom and 'aria-roledescription="line mark"' in dom  # vegaEmbed's catch() text
    # Below 200 px the first two charts: their coloured lines. Without the charts only the black
    # figure captions reach that far down (and the colourful recon.png sits above it).
    lower = shot[200:].astype(int)
    assert ((lower.max(axis=-1) - lower.min(axis=-1)) > 60).sum() > 1000, "the charts are not on screen"
    requested = set(re.findall(r'"url":"(https?://[^"/]*)', net_log))  # Chromium's own background calls only
    assert not any(word in host for host in requested for word in ("vega", "cdn", "jsdelivr", "unpkg")), requested

    dom, shot, _ = _open_in_chromium(out / "index.html", tmp_path / "index")
    assert dom.count("<img ") >= 5
    pixels = shot.astype(int)  # a broken image is a grey icon and black alt text: no colour
    assert ((pixels.max(axis=-1) - pixels.min(axis=-1)) > 60).sum() > 1000, "the plot images are not on screen"


@pytest.mark.integration
def test_per_suite_scatter_has_one_panel_per_suite_and_the_diagonal(tmp_path):
    """`dvc plots show --json` fills .dvc/plots/scatter_diagonal.json: a panel per suite, the y = x
    line in each, the clean suite (input = target) left out; vl-convert draws exactly that."""
    import json

    import vl_convert

    repo, env = _new_repo(tmp_path)
    _per_image_csv(repo)
    shown = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=repo, capture_output=True, text=True, env=env)
    data = json.loads(shown.stdout)["data"]
    for name, x_title in (("per-image PSNR by suite", "rainy input PSNR (dB)"),
                          ("build/evaluation/per_image.csv", "rainy input PSNR in the rain mask (dB)")):
        spec = data[name][0]["content"]
        assert spec["facet"]["field"] == "suite" and spec["title"]["text"].endswith("by suite")
        rule, points = spec["spec"]["layer"]
        assert rule["mark"]["type"] == "rule"
        enc = rule["encoding"]  # from (lo, lo) to (hi, hi): on y = x
        assert enc["x"]["field"] == enc["y"]["field"] and enc["x2"]["field"] == enc["y2"]["field"] != enc["x"]["field"]
        assert points["encoding"]["x"]["title"] == x_title and points["encoding"]["y"]["title"].startswith("model output PSNR")
        svg = vl_convert.vegalite_to_svg(spec)
        assert svg.count('aria-roledescription="rule mark container"') == 2  # seen, unseen; no clean panel
        assert svg.count('aria-roledescription="point"') == 5
        assert ">seen<" in svg and ">unseen<" in svg and ">clean<" not in svg
    whole = data["per-image PSNR by suite"][0]["content"]["transform"]
    assert "datum['psnr_input']" in whole[0]["calculate"] and "datum['psnr']" in whole[1]["calculate"]


def test_plots_without_data_is_one_line(tmp_path):
    repo, env = _new_repo(tmp_path)
    result = subprocess.run([sys.executable, "-m", "pipeline", "plots", "--root", str(repo)], capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "run the pipeline first" in result.stderr


@pytest.mark.integration
def test_plots_without_the_custom_template_names_it(tmp_path):
    """A workspace whose .dvc lacks plots/ (not a clone of this repo): one line naming the template."""
    repo, env = _new_repo(tmp_path, templates=False)
    _per_image_csv(repo)
    result = subprocess.run([sys.executable, "-m", "pipeline", "plots", "--root", str(repo)], capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "Template 'scatter_diagonal' not found" in result.stderr


def test_every_subcommand_has_its_own_description():
    from pipeline.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert {"register", "registry", "predict", "profile", "plots", "train"} <= set(commands)
    descriptions = {name: sub.description for name, sub in commands.items()}
    assert all(descriptions.values()), [name for name, text in descriptions.items() if not text]
    assert len(set(descriptions.values())) == len(descriptions)  # each its own, not the program's


def test_make_help_lists_every_target():
    makefile = (ROOT / "Makefile").read_text()
    phony = set(re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split())
    shown = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    listed = set(re.findall(r"^make (\S+)", shown, re.M))
    assert phony - {"help"} <= listed and {"serve", "stop", "study", "plots"} <= listed
