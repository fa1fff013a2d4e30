"""`raincheck study apply` on made-up study reports (no training): the recommended grid keys land in
params.yaml with its comments, after validation, with a byte-identical backup and a printed diff;
a study that recommends nothing (not every cell converged) is refused and nothing is touched."""

from __future__ import annotations

import difflib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.config import load_params
from pipeline.study import aggregate
from tests.conftest import REPO
from tests.workspaces import child_env

RESNET = {"type": "resnet", "channels": 16, "blocks": 2}
RECOMMENDED = {"curate.selection.n_backgrounds": 256, "curate.selection.policy": "textured", "train.model": RESNET}


def _workspace(tmp_path: Path, config: dict | None = RECOMMENDED, reason: str = "") -> Path:
    """A fresh clone's top (params.yaml, profiles/) with a made-up build/study/recommendation.json."""
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copy2(REPO / "params.yaml", root / "params.yaml")
    shutil.copytree(REPO / "profiles", root / "profiles")
    study = root / "build" / "study"
    study.mkdir(parents=True)
    (study / "recommendation.json").write_text(json.dumps({"config": config, "reason": reason, "fixed": {"train.iterations": 800}}))
    return root


def _apply(root: Path, *args: str) -> int:
    return main(["study", "apply", "--root", str(root), "--params", str(root / "params.yaml"), *args])


def test_python_m_pipeline_study_apply_writes_the_recommendation(tmp_path: Path):
    root = _workspace(tmp_path)
    before = (root / "params.yaml").read_bytes()
    result = subprocess.run([sys.executable, "-m", "pipeline", "study", "apply"], cwd=root, env=child_env(REPO),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    params = load_params(root / "params.yaml")
    assert params.curate.selection.n_backgrounds == 256 and params.curate.selection.policy == "textured"
    assert params.train.model.type == "resnet" and params.train.model.channels == 16
    assert (root / "params.yaml.bak").read_bytes() == before
    # the diff was printed, and it holds the changed keys only: the rest of the file, comments included, stays
    assert "--- params.yaml (before)" in result.stdout and "+    n_backgrounds: 256" in result.stdout
    assert "-    mask_deadzone: 0.1" in result.stdout  # train.model is replaced as a whole, as in the study's cells
    after = (root / "params.yaml").read_text()
    new_lines = after.splitlines()
    diff = list(difflib.unified_diff(before.decode().splitlines(), new_lines, lineterm=""))
    removed = [line[1:].split(":")[0].strip() for line in diff if line.startswith("-") and not line.startswith("---")]
    added = [line[1:].split(":")[0].strip() for line in diff if line.startswith("+") and not line.startswith("+++")]
    assert removed == ["n_backgrounds", "policy", "type", "blocks", "mask_channels", "mask_deadzone", "composition", "bright_gate",
                       "streak_gate", "mask_scales", "shower_check"]
    assert added == ["n_backgrounds", "policy", "type", "blocks", "channels"]
    assert "    blocks: 2" in new_lines  # the same value; its comment described the masked_prior model
    assert "    policy: textured              # all | smooth (lowest bin) | textured (highest bin) | balanced (equal per bin)" in new_lines
    assert "                 lomiri-wallpapers-20.04, tuxpaint-data]" in new_lines  # a wrapped flow list is not re-wrapped
    assert "presets: [small, medium]" in after  # study.fixed is not applied (and a flow list stays one)
    assert "not applied" in result.stdout


def test_nothing_converged_is_refused_and_nothing_is_touched(tmp_path: Path, capsys):
    from pipeline.study_report import recommendation_record, summarize

    params = load_params(REPO / "profiles" / "study-quick.yaml")
    study = params.study
    results = [{"cell_id": f"c{i}", "label": f"n={i}", "config": {"curate.selection.n_backgrounds": 64 * (i + 1)},
                "overrides": {"train.seed": 1}, "metrics": {study.objective: 10.0 + i, study.floor_metric: 0.5}, "error": None,
                "per_image": [], "convergence": {"converged": False, "delta_db": 3.0, "reason": "moved 3.00 dB"}} for i in range(2)]
    rows = aggregate(results, [study.objective, study.floor_metric])
    markdown, best, _ = summarize(params, results, rows, [], {"effects": [], "claims": []})
    record = recommendation_record(params, results, best)
    assert markdown.splitlines()[2].startswith("**NOT CONVERGED: 2 of 2 cells")  # said at the top of the markdown
    assert record["config"] is None and record["reason"] == "2 of 2 cells did not converge (or failed)"

    root = _workspace(tmp_path)
    (root / "build" / "study" / "recommendation.json").write_text(json.dumps(record))
    before = (root / "params.yaml").read_bytes()
    assert _apply(root) == 1
    error = capsys.readouterr().err
    assert "the study recommends nothing: 2 of 2 cells did not converge" in error and "recommendation.json" in error
    assert (root / "params.yaml").read_bytes() == before and not (root / "params.yaml.bak").exists()


def test_record_names_the_floor_and_the_recommended_configuration():
    from pipeline.study_report import recommendation_record

    params = load_params(REPO / "profiles" / "study-quick.yaml")
    converged = [{"convergence": {"converged": True}}] * 3
    assert "no configuration met the floor psnr_bg_gain/unseen >= -1 dB" in recommendation_record(params, converged, None)["reason"]
    best = {"config": RECOMMENDED, f"{params.study.objective}:mean": 12.5, f"{params.study.floor_metric}:mean": 0.2}
    record = recommendation_record(params, converged, best)
    assert record["config"] == RECOMMENDED and record["reason"] == "" and record["objective_mean"] == 12.5
    assert record["fixed"] == {"train.rain.presets": ["small"]} and record["converged"] == 3


def test_dry_run_prints_the_diff_and_writes_nothing(tmp_path: Path, capsys):
    root = _workspace(tmp_path)
    before = (root / "params.yaml").read_bytes()
    assert _apply(root, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "+    policy: textured" in out and "--dry-run" in out
    assert (root / "params.yaml").read_bytes() == before and not (root / "params.yaml.bak").exists()


def test_an_invalid_recommendation_is_refused_before_writing(tmp_path: Path, capsys):
    root = _workspace(tmp_path, {"curate.selection.n_backgrounds": -5})
    before = (root / "params.yaml").read_bytes()
    assert _apply(root) == 2  # ParamsError: the project's validation, naming the key
    assert "curate.selection.n_backgrounds" in capsys.readouterr().err
    assert (root / "params.yaml").read_bytes() == before and not (root / "params.yaml.bak").exists()


def test_an_older_backup_is_never_overwritten(tmp_path: Path, capsys):
    root = _workspace(tmp_path)
    (root / "params.yaml.bak").write_text("an older backup\n")
    before = (root / "params.yaml").read_bytes()
    assert _apply(root) == 1
    assert "already holds an older backup" in capsys.readouterr().err
    assert (root / "params.yaml").read_bytes() == before and (root / "params.yaml.bak").read_text() == "an older backup\n"


def test_applying_twice_changes_nothing_the_second_time(tmp_path: Path, capsys):
    root = _workspace(tmp_path)
    assert _apply(root) == 0
    applied = (root / "params.yaml").read_bytes()
    assert _apply(root) == 0
    assert "already holds the recommendation" in capsys.readouterr().out
    assert (root / "params.yaml").read_bytes() == applied


def test_a_report_without_recommendation_json_is_refused(tmp_path: Path, capsys):
    root = _workspace(tmp_path)
    study = root / "build" / "study"
    (study / "recommendation.json").unlink()
    (study / "suggested_params.yaml").write_text("{}\n")  # an older report that recommended nothing
    assert _apply(root) == 1 and "recommends nothing" in capsys.readouterr().err
    (study / "suggested_params.yaml").write_text(yaml.safe_dump({"curate": {"selection": {"n_backgrounds": 64}}}))
    assert _apply(root, "--from", str(study)) == 1 and "predates `raincheck study apply`" in capsys.readouterr().err
    assert not (root / "params.yaml.bak").exists()


@pytest.mark.parametrize("profile", ["study-quick", "tiny"])
def test_edit_keeps_a_safe_dump_style_file_as_it_was(profile: str):
    from pipeline.config import read_params
    from pipeline.params_checks import read_yaml
    from pipeline.study_apply import edit_params

    # A params file as yaml.safe_dump writes it (no comments, block lists): the profile merged onto cpu.yaml.
    text = "# a safe_dump-style params file\n" + yaml.safe_dump(read_params(REPO / "profiles" / f"{profile}.yaml"), sort_keys=False)
    edited = edit_params(text, {"train.rain.presets": ["small", "large"], "curate.selection.policy": "smooth"})
    raw = read_yaml(edited)
    assert raw["train"]["rain"]["presets"] == ["small", "large"] and raw["curate"]["selection"]["policy"] == "smooth"
    changed = [line for line in edited.splitlines() if line not in text.splitlines()]
    assert changed == ["    policy: smooth", "    - large"]
    assert edited.startswith(text.splitlines()[0])  # the header comment stays
