"""`raincheck study apply`: write the study's recommended composition into params.yaml.

The study report (pipeline/study_report.py) writes `build/study/recommendation.json`: the grid
overrides of the recommended configuration as dotted keys (e.g. curate.selection.n_backgrounds,
curate.selection.policy, train.model), or none and why. Applying sets exactly those keys; a
dict value (a model spec) replaces the whole mapping, as it did in the study's cells. study.fixed
(the regime every cell trained under, e.g. shorter training) is not applied.

The file is edited with ruamel.yaml's round trip, so comments, key order and flow lists stay; only
the changed keys' lines are taken from its output (its re-wrapping of long flow lists elsewhere is
dropped), and the result must parse to the old params with the overrides set, and validate,
before anything is written. The replaced file is kept as params.yaml.bak (pipeline.profiles.
keep_backup: never overwriting an older backup); the new one is written atomically.
"""

from __future__ import annotations

import copy
import difflib
import io
import json
from pathlib import Path
from typing import Any, Mapping

from pipeline import layout
from pipeline.study import short

# ruamel's indentation settings (mapping, sequence, offset): params.yaml's hand-written style, and
# yaml.safe_dump's (the profiles written by tools). The one that reproduces the file best is used.
INDENTS = [(2, 4, 2), (2, 2, 0)]


class StudyApplyError(ValueError):
    """The recommendation cannot be applied; the message names the file and why (nothing is written)."""


def read_recommendation(folder: Path) -> dict:
    """The recommended grid overrides {dotted key: value} from `folder`/recommendation.json.

    Raises StudyApplyError when the study recommends nothing (the report's reason is quoted) or the
    file is missing or malformed.
    """
    path = folder / layout.STUDY_RECOMMENDATION_JSON
    if not path.is_file():
        suggested = folder / layout.STUDY_SUGGESTED_PARAMS
        if suggested.is_file() and not suggested.read_text().strip("{}\n "):
            raise StudyApplyError(f"{folder}: the study recommends nothing (suggested_params.yaml is empty; "
                                  f"see {folder / layout.STUDY_RECOMMENDATION}): params were left as they are")
        if suggested.is_file():  # its block mixes the grid's choice with study.fixed: not applied blindly
            raise StudyApplyError(f"{path}: not found: this study report predates `raincheck study apply`; re-run the study "
                                  f"(`make study`) to write it, or copy the grid keys from {suggested} by hand")
        raise StudyApplyError(f"{path}: not found; `make study` writes it (or give the study's folder with --from DIR)")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise StudyApplyError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(record, dict) or "config" not in record:
        raise StudyApplyError(f"{path}: no `config` entry (expected the study report's recommendation.json)")
    if not record["config"]:
        why = record.get("reason") or "no configuration qualified"
        raise StudyApplyError(f"{path}: the study recommends nothing: {why}; params were left as they are")
    if not isinstance(record["config"], dict):
        raise StudyApplyError(f"{path}: `config` must map dotted params keys to values, got {record['config']!r}")
    return record


def _yaml(indent: tuple[int, int, int]):
    from ruamel.yaml import YAML

    handler = YAML()  # round trip: comments, key order, flow style and quotes survive
    handler.preserve_quotes = True
    handler.width = 100
    handler.indent(mapping=indent[0], sequence=indent[1], offset=indent[2])
    return handler


def _dump(handler, data) -> str:
    buffer = io.StringIO()
    handler.dump(data, buffer)
    return buffer.getvalue()


def _assign(node, key: str, value: Any) -> None:
    """node[key] = value, in place where the old value has the same shape (its comments stay);
    keys the new mapping lacks are removed (a model spec is replaced as a whole, not merged), and
    when its `type` changes only the `type` line keeps its comment."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    old = node.get(key)
    if old == value:
        return
    if isinstance(value, dict):
        if not isinstance(old, CommentedMap):
            node[key] = old = CommentedMap()
        for gone in [k for k in old if k not in value]:
            del old[gone]
        if "type" in value and old.get("type") != value["type"]:  # another model: its keys' comments described the old one
            for kept in [k for k in old.ca.items if k != "type"]:
                del old.ca.items[kept]
        for k, v in value.items():
            _assign(old, k, v)
    elif isinstance(value, list):
        seq = CommentedSeq(copy.deepcopy(value))
        if isinstance(old, CommentedSeq) and old.fa.flow_style():
            seq.fa.set_flow_style()  # `presets: [small, medium]` stays on one line
        node[key] = seq
    else:
        node[key] = value


def _set_dotted(data, key: str, value: Any) -> None:
    """Set `a.b.c` in a round-trip document, creating missing sections (validation catches typos)."""
    from ruamel.yaml.comments import CommentedMap

    *parents, leaf = key.split(".")
    for part in parents:
        if not isinstance(data.get(part), dict):
            data[part] = CommentedMap()
        data = data[part]
    _assign(data, leaf, value)


def _merge_back(original: list[str], baseline: list[str], changed: list[str]) -> str | None:
    """`original` with the hunks that turn `baseline` (ruamel's dump of the unchanged file) into
    `changed` (its dump with the overrides); None when a hunk touches a line ruamel re-formatted."""
    where = {}  # baseline line index -> original line index, for lines ruamel reproduced verbatim
    for block in difflib.SequenceMatcher(None, original, baseline, autojunk=False).get_matching_blocks():
        where.update({block.b + i: block.a + i for i in range(block.size)})
    edits = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, baseline, changed, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if i1 < i2:
            span = [where.get(i) for i in range(i1, i2)]
            if None in span or span != list(range(span[0], span[0] + len(span))):
                return None
            start, stop = span[0], span[-1] + 1
        elif i1 - 1 in where:
            start = stop = where[i1 - 1] + 1
        else:
            return None
        edits.append((start, stop, changed[j1:j2]))
    lines = list(original)
    for start, stop, new in reversed(edits):
        lines[start:stop] = new
    return "".join(lines)


def edit_params(text: str, overrides: Mapping[str, Any]) -> str:
    """params.yaml text with the dotted `overrides` set, comments and layout kept as far as possible.

    Raises StudyApplyError when the edited text would not parse back to exactly the old params
    with the overrides set (the guard against any round-trip surprise).
    """
    from pipeline.params_checks import read_yaml

    expected = read_yaml(text)
    for key, value in overrides.items():
        node = expected
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = copy.deepcopy(value)
    original = text.splitlines(keepends=True)
    candidates = []
    for indent in INDENTS:
        handler = _yaml(indent)
        baseline = _dump(handler, handler.load(text)).splitlines(keepends=True)
        data = handler.load(text)
        for key, value in overrides.items():
            _set_dotted(data, key, value)
        changed = _dump(handler, data)
        reformatted = sum(tag != "equal" for tag, *_ in difflib.SequenceMatcher(None, original, baseline, autojunk=False).get_opcodes())
        candidates.append((reformatted, _merge_back(original, baseline, changed.splitlines(keepends=True)), changed))
    candidates.sort(key=lambda c: c[0])
    for _, merged, whole in candidates:
        for result in (merged, whole):
            if result is not None and read_yaml(result) == expected:
                return result
    raise StudyApplyError("could not edit the params file without changing other keys; set the keys by hand: "
                          + ", ".join(f"{k}={v!r}" for k, v in overrides.items()))


def apply_recommendation(params_path: Path, folder: Path, dry_run: bool = False) -> list[str]:
    """Apply `folder`'s recommendation to `params_path`; returns the lines to print (the diff first).

    Refuses (StudyApplyError, or ProfileError for a backup in the way, or ParamsError when the
    result does not validate) before anything is written.
    """
    from pipeline.config import load_params, parse_params
    from pipeline.io import atomic_path
    from pipeline.params_checks import read_yaml
    from pipeline.profiles import keep_backup

    record = read_recommendation(folder)
    overrides = record["config"]
    if not params_path.is_file():
        raise StudyApplyError(f"{params_path}: no such params file (--params)")
    load_params(params_path)  # a file that is not valid YAML or params is named as such, not edited
    old = params_path.read_text()
    new = edit_params(old, overrides)
    parse_params(read_yaml(new), source=params_path)  # the project's validation: a bad result is refused here
    label = ", ".join(f"{k}={short(v)}" for k, v in overrides.items())
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), f"{params_path} (before)",
                                      f"{params_path} (study recommendation)", lineterm=""))
    if record.get("fixed"):
        lines.append(f"note: study.fixed {record['fixed']} is how the study trained its cells, not part of the recommendation: not applied")
    if new == old:
        return lines + [f"[raincheck] {params_path} already holds the recommendation ({label}): nothing to do"]
    if dry_run:
        return lines + [f"[raincheck] --dry-run: {params_path} was left as it is"]
    backup = keep_backup(params_path)
    with atomic_path(params_path) as tmp:
        tmp.write_text(new)
    return lines + [f"[raincheck] saved the previous {params_path.name} as {backup}",
                    f"[raincheck] {params_path} <- the study's recommendation ({label})"]
