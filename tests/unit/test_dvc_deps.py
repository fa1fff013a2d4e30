"""dvc.yaml checked against the code: every source file a stage's command imports is a dep of that
stage, so editing it makes `dvc repro` re-run the stage instead of "didn't change, skipping".

A stage's command is `python -m pipeline <step>`; the CLI loads params (pipeline.config,
pipeline.runtime) and calls the step's module from pipeline/stages.py. The closure follows every
`import pipeline...` in those files, including the lazy ones inside functions (static, via ast).
The CLI's own dispatch code (pipeline/cli.py, __main__.py) is left out on purpose: it decides which
function runs, never what it computes, and a help-text edit should not re-run the pipeline.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from pipeline.stages import BY_NAME

ROOT = Path(__file__).resolve().parents[2]
ALWAYS = ("pipeline.config", "pipeline.runtime")


def module_file(name: str) -> Path | None:
    """pipeline/a/b.py or pipeline/a/b/__init__.py for `pipeline.a.b`; None if neither exists."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, name: str) -> set[str]:
    """Every `pipeline.*` module that `path` (module `name`) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                source = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return {m for m in found if m.split(".")[0] == "pipeline" and module_file(m) is not None}


def closure(entries: list[str]) -> set[Path]:
    """Source files of `entries` and of everything they import, with their packages' __init__.py."""
    todo, seen = list(entries), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        todo += imported_modules(module_file(name), name)
    return {module_file(name).relative_to(ROOT) for name in seen}


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(dep) or Path(dep) in path.parents for dep in deps)


@pytest.mark.parametrize("step", [s for s in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]])
def test_every_imported_source_file_is_a_dep_of_its_stage(step):
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][step]
    assert stage["cmd"] == f"python -m pipeline {step}", "the closure assumes the raincheck CLI runs the step"
    deps = [d for d in stage["deps"] if not d.startswith("${")]
    needed = closure([*ALWAYS, BY_NAME[step].module])
    missing = sorted(str(p) for p in needed if not covered(p, deps))
    assert not missing, f"dvc.yaml stage {step!r} imports files that are not in its deps: {missing}"


def test_the_closure_sees_lazy_and_relative_imports():
    """The checker itself: the train step reaches metrics through a lazy import in training/loop.py."""
    files = closure(["pipeline.training.train"])
    assert Path("pipeline/evaluation/metrics.py") in files and Path("pipeline/seeds.py") in files
    assert Path("pipeline/__init__.py") in files and Path("pipeline/registry/register.py") not in files
