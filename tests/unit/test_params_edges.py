"""Params edges a user hits (issue 14): duplicate keys, loose types, cross-field errors, schedule
values, and `raincheck profile` on a fresh clone. Each is refused when the params load, with one
line naming the key and what is allowed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, load_params, parse_params
from tests.conftest import REPO
from tests.workspaces import child_env


def _default() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _raincheck(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS --root ROOT` with this checkout's code, as a user runs it."""
    env = child_env(REPO)
    return subprocess.run([sys.executable, "-m", "pipeline", *args, "--root", str(root)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


# ----------------------------------------------------------------------------- duplicate keys
def test_duplicate_yaml_key_is_refused_naming_key_and_lines(tmp_path: Path):
    text = (REPO / "params.yaml").read_text()
    lines = text.splitlines()
    where = lines.index("  iterations: 2000") + 1  # 1-based line of train.iterations
    lines.insert(where, "  iterations: 3")  # the same key again, right below
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert f"line {where + 1}: duplicate key 'iterations' (first at line {where})" in str(error.value)


def test_duplicate_key_through_the_cli_exits_2_with_one_line(tmp_path: Path):
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    text = (REPO / "params.yaml").read_text().replace("seed: 1234\n", "seed: 1234\nseed: 99\n")
    (tmp_path / "params.yaml").write_text(text)
    result = _raincheck(tmp_path, "curate", "--params", str(tmp_path / "params.yaml"))
    assert result.returncode == 2
    assert "duplicate key 'seed'" in result.stderr and "Traceback" not in result.stderr


def test_merge_keys_and_exponent_floats_still_load(tmp_path: Path):
    text = (REPO / "params.yaml").read_text().replace("lr: 0.002 ", "lr: 2e-3 ")
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert load_params(path).train.lr == pytest.approx(2e-3)


# ----------------------------------------------------------------------------- strict types
@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("train", "iterations", True, r"train\.iterations: Input should be a valid integer \(got True\)"),
        ("train", "augment", 1, r"train\.augment: Input should be a valid boolean \(got 1\)"),
        ("train", "batch_size", "8", r"train\.batch_size: Input should be a valid integer \(got '8'\)"),
        ("schedule", "refresh_pool", "yes", r"schedule\.refresh_pool: Input should be a valid boolean"),
    ],
)
def test_loose_types_are_refused(section, key, value, message):
    raw = _default()
    raw[section][key] = value
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


def test_an_int_where_a_float_is_expected_is_accepted():
    raw = _default()
    raw["train"]["ema_decay"] = 0
    raw["train"]["betas"] = [0, 1]
    params = parse_params(raw)
    assert params.train.ema_decay == 0.0 and params.train.betas == (0.0, 1.0)


# ----------------------------------------------------------------------------- cross-field
def test_crop_larger_than_patches_is_refused_at_load():
    raw = _default()
    raw["train"]["crop_size"] = 96
    with pytest.raises(ParamsError, match=r"train\.crop_size=96 is larger than the training patches "
                                          r"\(64px, curate\.patch_size\): use a crop_size <= 64"):
        parse_params(raw)


def test_crop_not_divisible_by_the_model_stride_is_refused_at_load():
    raw = _default()
    raw["prior"]["model"]["downsample"] = 2  # stride 4
    raw["train"]["crop_size"] = 62
    with pytest.raises(ParamsError, match=r"train\.crop_size=62 must be divisible by the masked_prior model's "
                                          r"stride 4 \(2\*\*prior\.model\.downsample .*e\.g\. 56, 60, 64"):
        parse_params(raw)
    raw["train"]["model"] = {"type": "resnet", "channels": 8, "blocks": 1}  # full resolution: any crop
    assert parse_params(raw).train.crop_size == 62


def test_missing_evaluate_mask_threshold_is_named(tmp_path: Path):
    text = (REPO / "params.yaml").read_text()
    evaluate = text.index("\nevaluate:")
    start = text.index("  mask_threshold:", evaluate)
    path = tmp_path / "params.yaml"
    path.write_text(text[:start] + text[text.index("\n", start) + 1 :])
    with pytest.raises(ParamsError, match=r"evaluate\.mask_threshold: Field required"):
        load_params(path)


# ----------------------------------------------------------------------------- schedule
@pytest.mark.parametrize(
    "key, value, message",
    [
        ("cron", "61 25 * * 9", r"schedule\.cron: .*'61 25 \* \* 9' is not a valid cron expression \(Bad minute\)"),
        ("cron", "0 0 31 2 *", r"schedule\.cron: .*not a valid cron expression"),  # never happens
        ("cron", "0 3 * *", r"schedule\.cron: .*5 fields"),
        ("timezone", "Mars/Olympus_Mons", r"schedule\.timezone: .*unknown time zone 'Mars/Olympus_Mons'"),
    ],
)
def test_bad_schedule_is_refused_at_load(key, value, message):
    raw = _default()
    raw["schedule"][key] = value
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


def test_good_schedule_values_load():
    raw = _default()
    raw["schedule"].update(cron="*/15 6-18 * * mon-fri", timezone="Europe/Berlin")
    assert parse_params(raw).schedule.timezone == "Europe/Berlin"


# ----------------------------------------------------------------------------- profiles
def _fresh_clone(tmp_path: Path) -> Path:
    """What a fresh clone has at the top: params.yaml and profiles/ (no tests/photos, no data)."""
    root = tmp_path / "clone"
    root.mkdir()
    shutil.copytree(REPO / "profiles", root / "profiles")
    shutil.copy2(REPO / "params.yaml", root / "params.yaml")
    return root


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "profiles").glob("*.yaml")))
def test_every_profile_installs_on_a_fresh_clone(tmp_path: Path, name: str):
    from pipeline.profiles import render

    root = _fresh_clone(tmp_path)
    result = _raincheck(root, "profile", name)
    assert result.returncode == 0, result.stderr
    written = (root / "params.yaml").read_bytes()
    assert written == render(REPO / "profiles" / f"{name}.yaml")
    assert (written == (REPO / "profiles" / f"{name}.yaml").read_bytes()) == (name == "cpu")  # only the base is copied as is
    assert not (root / "params.yaml.bak").exists()  # params.yaml was a profile: nothing to keep
    # params.yaml, a full file (DVC tracks its keys), holds exactly the profile's params.
    installed = load_params(root / "params.yaml")
    assert installed.model_dump() == load_params(REPO / "profiles" / f"{name}.yaml").model_dump()
    assert b"extends:" not in written and installed.profile == name
    # What `raincheck ingest` then needs: every folder source exists in a fresh clone.
    for source in installed.ingest.sources:
        assert source.type != "folder" or (root / source.path).is_dir(), f"{name}: {source.path} missing"


def test_gpu_then_cpu_restores_params_yaml_byte_for_byte_and_prints_diffs(tmp_path: Path):
    root = _fresh_clone(tmp_path)
    original = (root / "params.yaml").read_bytes()
    result = _raincheck(root, "profile", "gpu")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "--- params.yaml (before)\n+++ params.yaml (profile gpu)" in out
    assert "\n-  iterations: 2000\n" in out and "\n+  iterations: 100000" in out and "(cpu.yaml: 2000)" in out
    assert "params.yaml <- profiles/gpu.yaml (merged onto its base)" in out
    gpu = load_params(root / "params.yaml")
    assert (gpu.train.iterations, gpu.train.lr, gpu.train.model.bright_gate) == (100000, 0.0002, 21)  # 21: cpu.yaml's, merged
    result = _raincheck(root, "profile", "cpu")
    assert result.returncode == 0, result.stderr
    assert (root / "params.yaml").read_bytes() == original
    assert "+++ params.yaml (profile cpu)" in result.stdout and "\n+  iterations: 2000\n" in result.stdout
    assert not (root / "params.yaml.bak").exists()
    assert "no change" in _raincheck(root, "profile", "cpu").stdout


def test_profile_with_a_missing_folder_is_refused_and_params_kept(tmp_path: Path):
    root = _fresh_clone(tmp_path)
    raw = yaml.safe_load((root / "profiles" / "tiny.yaml").read_text())
    raw["ingest"]["sources"] = [{"type": "folder", "path": "tests/photos"}]
    (root / "profiles" / "mine.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    before = (root / "params.yaml").read_bytes()
    result = _raincheck(root, "profile", "mine")
    assert result.returncode == 2
    assert f"error: profiles/mine.yaml: ingest.sources[0].path: {root / 'tests/photos'} is not a folder" in result.stderr
    assert (root / "params.yaml").read_bytes() == before


def test_profile_keeps_local_edits_in_a_backup(tmp_path: Path):
    root = _fresh_clone(tmp_path)
    edited = (root / "params.yaml").read_text().replace("iterations: 2000", "iterations: 800")
    (root / "params.yaml").write_text(edited)
    result = _raincheck(root, "profile", "tiny")
    assert result.returncode == 0, result.stderr
    assert "saved as params.yaml.bak" in result.stdout
    assert (root / "params.yaml.bak").read_text() == edited
    assert load_params(root / "params.yaml").profile == "tiny"
    # A second, different set of edits must not overwrite the first backup.
    (root / "params.yaml").write_text(edited.replace("iterations: 800", "iterations: 900"))
    result = _raincheck(root, "profile", "cpu")
    assert result.returncode == 2 and "already holds an older backup" in result.stderr
    assert (root / "params.yaml.bak").read_text() == edited
    assert "iterations: 900" in (root / "params.yaml").read_text()
