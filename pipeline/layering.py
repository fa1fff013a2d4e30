"""`python -m pipeline.layering` (`make check-layout`): the code's layers, checked statically.

Import arrows point down only. LAYERS below lists the packages of the project from the top (what a
user runs) to the foundation; a package may import any package in a layer below its own and none
in its own layer or above. A "package" is `flows` or a direct child of `pipeline` (a subpackage or
a top-level module). Three checks, from every import statement in pipeline/ and flows/, at module
level or inside a function (the lazy imports count: they run too), built with grimp:

1. no import cycle between packages (a cycle is named with one import line per arrow);
2. no import against LAYERS (named with the import line), and every package placed in a layer;
3. no file name (`metrics.json`, `model.pt`, `manifest.csv`, ...) spelled as a string literal more
   than once in pipeline/ and flows/: pipeline/layout.py spells them, the rest import it.

Prints one line per finding; exit 0 when there is none, 1 otherwise. tests/unit/test_layering.py runs it.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "flows")

# Top to bottom. Within a layer the packages are independent of each other (grimp's default).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("flows", "pipeline.__main__", "pipeline.layering", "pipeline.install"),  # Prefect flows; `python -m pipeline`; this check; `make venv`
    ("pipeline.cli",),  # the command line: one subcommand per step, registry, predict, serve-model
    ("pipeline.registry", "pipeline.study_report", "pipeline.study_apply"),  # registration and the gate; the study's outputs and `study apply`
    ("pipeline.training", "pipeline.serving", "pipeline.study_stats", "pipeline.workspace", "pipeline.profiles",
     "pipeline.plots"),  # the prior and train steps; the served model and predict; ...
    ("pipeline.evaluation", "pipeline.study"),  # metrics (training validates with them), the evaluate step
    ("pipeline.curation", "pipeline.ingestion", "pipeline.synthesis", "pipeline.models", "pipeline.inference",
     "pipeline.lineage", "pipeline.tracking", "pipeline.stages", "pipeline.reporting"),  # steps, networks, MLflow
    ("pipeline.config",),  # Params: params.yaml read and validated
    ("pipeline.params_checks",),  # checks across params sections
    ("pipeline.params",),  # the params schema, one module per section
    ("pipeline.io", "pipeline.layout", "pipeline.runtime", "pipeline.seeds"),  # files, names, environment, seeds
)

# A file name as the code spells it: the whole string literal, or a piece of an f-string after "/".
FILE_NAME = re.compile(r"^/?([A-Za-z0-9_][A-Za-z0-9_.-]*\.(?:json|pt|csv|png|npy|npz|yaml|yml|lock|md|html|db|dvc))$")
LAYOUT = Path("pipeline/layout.py")


def package_of(module: str) -> str:
    """`pipeline.registry.register` -> `pipeline.registry`; `flows.retrain` -> `flows`."""
    parts = module.split(".")
    return parts[0] if parts[0] != "pipeline" or len(parts) == 1 else ".".join(parts[:2])


def import_graph():
    """grimp's graph of every import in pipeline/ and flows/ of this checkout (not of an installed copy)."""
    import grimp

    if sys.path[0] != str(ROOT):
        sys.path.insert(0, str(ROOT))
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def _arrow(graph, importer: str, imported: str) -> str:
    """One import line from package `importer` into package `imported`: `file:line: statement`."""
    for module in sorted(m for m in graph.modules if package_of(m) == importer):
        for target in sorted(graph.find_modules_directly_imported_by(module)):
            if package_of(target) == imported:
                detail = graph.get_import_details(importer=module, imported=target)[0]
                return f"{module}:{detail['line_number']}: {detail['line_contents']}"
    return f"{importer} -> {imported}"


def package_edges(graph) -> dict[str, set[str]]:
    """Package -> the packages it imports (itself and the bare `pipeline` namespace left out)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for module in graph.modules:
        for target in graph.find_modules_directly_imported_by(module):
            a, b = package_of(module), package_of(target)
            if a != b and b != "pipeline":
                edges[a].add(b)
    return edges


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one package (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:  # recursion depth: the number of packages (a few dozen)
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(set(edges) | {b for targets in edges.values() for b in targets}):
        if node not in index:
            visit(node)
    return components


def cycle_findings(graph) -> list[str]:
    """One line per import cycle between packages, with an import line for each arrow in it."""
    edges = package_edges(graph)
    findings = []
    for component in find_cycles(edges):
        arrows = [_arrow(graph, a, b) for a in component for b in component if b in edges.get(a, ())]
        findings.append(f"import cycle between {', '.join(component)}: " + "; ".join(arrows))
    return findings


def layer_findings(graph) -> list[str]:
    """Packages in no layer, and imports that point up or sideways in LAYERS."""
    import grimp

    placed = {name for layer in LAYERS for name in layer}
    present = {package_of(m) for m in graph.modules} - {"pipeline"}
    findings = [f"{name}: in no layer of pipeline/layering.py LAYERS; place it (which layers may it import?)"
                for name in sorted(present - placed)]
    findings += [f"{name}: in LAYERS but not in the code; remove it from pipeline/layering.py" for name in sorted(placed - present)]
    layers = [grimp.Layer(*(name for name in layer if name in present)) for layer in LAYERS]
    for dependency in sorted(graph.find_illegal_dependencies_for_layers(layers=layers), key=lambda d: (d.importer, d.imported)):
        findings.append(f"{dependency.importer} must not import {dependency.imported} (pipeline/layering.py LAYERS): "
                        f"{_arrow(graph, dependency.importer, dependency.imported)}")
    return findings


def file_name_spellings(root: Path = ROOT) -> dict[str, list[str]]:
    """File name -> where it is spelled (`path:line`) in pipeline/ and flows/ string literals."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(p for package in PACKAGES for p in (root / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        pieces = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            match = FILE_NAME.match(node.value)
            if match and (id(node) in pieces or not node.value.startswith("/")):
                found[match.group(1)].append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def file_name_findings(root: Path = ROOT) -> list[str]:
    """One line per file name spelled more than once."""
    findings = []
    for name, places in sorted(file_name_spellings(root).items()):
        if len(places) > 1:
            where = "it is there: import it" if any(p.startswith(f"{LAYOUT}:") for p in places) else "add it there"
            findings.append(f"{name!r} is spelled {len(places)} times ({', '.join(places)}); "
                            f"{LAYOUT} is the one place ({where}, `from pipeline import layout`)")
    return findings


def main() -> int:
    graph = import_graph()
    findings = cycle_findings(graph) + layer_findings(graph) + file_name_findings()
    for line in findings:
        print(f"error: {line}")
    layers = " > ".join("|".join(name.removeprefix("pipeline.") for name in layer) for layer in LAYERS)
    print(f"[raincheck] layering: {len(findings)} finding(s); {len(graph.modules)} modules; layers {layers}",
          file=sys.stderr if findings else sys.stdout)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
