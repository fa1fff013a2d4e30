"""dvc.yaml against pipeline/stages.py: the same stages, in the same order, with the declared outputs.

dvc.yaml is the one stage list that cannot import the declaration, so it is checked here; the CLI,
the retrain flow and the flow benchmark import it (tests/unit/test_dvc_deps.py checks the code deps).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline import layout
from pipeline.stages import BY_NAME, DVC_STAGES, STAGES

ROOT = Path(__file__).resolve().parents[2]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _declared_outputs(stage: dict) -> list[str]:
    """outs, metrics and plots of a dvc.yaml stage, as the path strings dvc.yaml spells."""
    paths = []
    for key in ("outs", "metrics", "plots"):
        for entry in stage.get(key, []):
            paths.extend(entry if isinstance(entry, dict) else [entry])
    return paths


def test_dvc_yaml_stages_are_the_declared_ones_in_order():
    assert list(DVC) == list(DVC_STAGES)


def test_every_declared_artifact_is_an_output_of_its_dvc_stage():
    for name in DVC_STAGES:
        stage = BY_NAME[name]
        outputs = _declared_outputs(DVC[name])
        folder = f"${{paths.{stage.folder}}}"
        assert any(out == folder or out.startswith(folder + "/") for out in outputs), (name, outputs)
        for artifact in stage.artifacts:
            assert f"{folder}/{artifact}" in outputs, f"dvc.yaml stage {name!r} lacks {folder}/{artifact}"


def test_each_dvc_stage_runs_its_step_through_the_cli():
    for name in DVC_STAGES:
        assert DVC[name]["cmd"] == f"python -m pipeline {name}"


def test_stage_entries_and_names_are_consistent():
    import importlib

    assert len({s.name for s in STAGES}) == len(STAGES)
    for stage in STAGES:
        assert callable(getattr(importlib.import_module(stage.module), stage.function)), stage
    assert {layout.METRICS, layout.MODEL, layout.PRIOR} <= {a for s in STAGES for a in s.artifacts}


def test_the_cli_and_the_flow_follow_the_declaration():
    from flows import retrain
    from pipeline.cli import build_parser

    subcommands = build_parser()._subparsers._group_actions[0].choices
    assert [s.name for s in STAGES] == [c for c in subcommands if c in BY_NAME]
    assert tuple(retrain.STAGES) == DVC_STAGES
