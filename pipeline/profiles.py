"""`raincheck profile NAME`: write profiles/NAME.yaml into params.yaml, never losing local edits.

profiles/cpu.yaml is the base: a full params file, written as it is (params.yaml is byte for byte
cpu.yaml by default). The other profiles are overlays (`extends: cpu` and only the keys that
differ, pipeline/params/overlay.py): params.yaml gets base ⊕ overlay, read and written with
ruamel.yaml's round trip so that the base's comments stay. A scalar (or list of scalars) the
overlay changes gets `(cpu.yaml: OLD)` in front of its comment, which was written for the base's
value; the overlay's own comment on that key, if any, replaces the base's.

A profile is refused before anything is written when it does not validate or names a folder
source that does not exist. A params.yaml that is not what one of the profiles writes holds local
edits: it is saved as params.yaml.bak first (refused when an older, different backup is already
there; keep_backup, shared with `raincheck study apply`). Both files are written atomically
(temporary sibling, then rename). The lines returned include a unified diff of params.yaml, old -> new.
"""

from __future__ import annotations

import difflib
import io
import itertools
import re
from functools import partial
from pathlib import Path
from typing import Any, Mapping

from pipeline import layout
from pipeline.params.base import ParamsError


COMMENT_COLUMN = 34  # where cpu.yaml's end-of-line comments start


class ProfileError(ValueError):
    """A profile that cannot be installed; the message names the file or key and what to do."""


def _yaml():
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments, key order, flow style and quotes survive
    yaml.indent(mapping=2, sequence=4, offset=2)  # cpu.yaml's layout
    yaml.width = 4096  # never re-wrap a line
    yaml.preserve_quotes = True
    return yaml


def _show(value: Any) -> str:
    """A short YAML-ish rendering of a scalar or a list of scalars (for the `(cpu.yaml: OLD)` mark)."""
    if isinstance(value, list):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def _plain(value: Any) -> bool:
    """A scalar or a list of scalars: what gets the `(cpu.yaml: OLD)` mark when an overlay changes it."""
    if isinstance(value, list):
        return not any(isinstance(item, (Mapping, list)) for item in value)
    return not isinstance(value, Mapping)


def _eol(mapping: Any, key: Any) -> str | None:
    """The end-of-line comment on `key` in a round-trip mapping, without '#', or None."""
    token = getattr(mapping, "ca", None) and mapping.ca.items.get(key, [None] * 4)[2]
    first = token.value.split("\n", 1)[0].strip() if token else ""
    return first.lstrip("#").strip() or None


def _column(mapping: Any) -> int:
    """The column the mapping's end-of-line comments start at (cpu.yaml's 34 when it has none)."""
    columns = [item[2].column for item in mapping.ca.items.values() if len(item) > 2 and item[2] is not None
               and item[2].value.lstrip().startswith("#")]
    return max(columns, default=COMMENT_COLUMN)


def _assign(base_name: str, base: Any, key: Any, value: Any, source: Mapping) -> None:
    """merge_into's `assign` for the writer: set base[key] = value, keeping the comments in place."""
    ours = _eol(source, key)
    if key not in base:
        base[key] = value
        if ours:
            base.yaml_add_eol_comment(f"# {ours}", key, column=_column(base))
        return
    old = base[key]
    base[key] = value
    if old == value or not (_plain(old) and _plain(value)):
        return  # unchanged, or a section: its comment describes the key, not the value
    text = f"({base_name}: {_show(old)}) {ours or _eol(base, key) or ''}".rstrip()
    token = base.ca.items.get(key, [None] * 4)[2]
    if token is None:
        base.yaml_add_eol_comment(f"# {text}", key, column=_column(base))
    else:  # keep what follows the line (blank lines, the comment lines of the next block)
        rest = token.value.split("\n", 1)[1] if "\n" in token.value else ""
        if not token.value.lstrip().startswith("#"):
            token.start_mark.column = _column(base)  # a blank-lines-only token: no comment column yet
        token.value = f"# {text}\n{rest}"


def render(path: Path) -> bytes:
    """What `raincheck profile` writes for the profile file `path` (a full file: its own bytes)."""
    from pipeline.params.overlay import merge_into, resolve_chain

    yaml = _yaml()
    chain = resolve_chain(path, lambda file: yaml.load(file.read_text()))
    if len(chain) == 1:
        return path.read_bytes()
    merged = chain[0][2]
    for (base_file, _, _), (_, replace, params) in zip(chain, chain[1:]):
        merge_into(merged, params, replace, partial(_assign, base_file.name))
    out = io.StringIO()
    yaml.dump(merged, out)
    body = out.getvalue().splitlines()
    while body and body[0].startswith("#"):  # the base's header describes the base
        body.pop(0)
    for i in range(len(body) - 1, 0, -1):  # a blank line before each top-level section, as in cpu.yaml
        if re.match(r"[A-Za-z_]", body[i]) and body[i - 1].startswith(" "):
            body.insert(i, "")
    names = [f"profiles/{file.name}" if file.parent.name == "profiles" else str(file) for file, _, _ in chain]
    own = list(itertools.takewhile(lambda line: line.startswith("#"), path.read_text().splitlines()))
    mark = chain[0][0].name if len(chain) == 2 else "BASE.yaml"  # a chain: each overlay's own base
    header = [
        f"# Written by `raincheck profile {path.stem}`: {names[0]} with the overlay {', then '.join(names[1:])}",
        "# applied (mappings merged key by key; lists and values replaced). The comments are the base's;",
        f"# `({mark}: OLD)` marks a value the overlay changed. Edit profiles/*.yaml, then run",
        "# `raincheck profile NAME` again: edits made here are local (kept in params.yaml.bak).",
        *own,
    ]
    return ("\n".join(header + body) + "\n").encode()


def _check_rendered(text: bytes, source: Path, expected: dict) -> None:
    """The rendered file must validate to exactly the profile's params (ruamel writes, PyYAML reads)."""
    from pipeline.config import parse_params
    from pipeline.params_checks import read_yaml

    got = parse_params(read_yaml(text.decode()), f"params.yaml rendered from {source}").model_dump(mode="json")
    if got != expected:
        raise ProfileError(f"{source}: the merged params.yaml would not read back as the profile does "
                           "(a YAML 1.1/1.2 difference?); quote the overlay's string values and retry")


def _rendered_profiles(folder: Path) -> set[bytes]:
    """What each profile in `folder` writes (one that cannot be rendered is left out)."""
    from ruamel.yaml.error import YAMLError

    out = set()
    for path in folder.glob("*.yaml"):
        try:
            out.add(render(path))
        except (ParamsError, YAMLError, OSError):
            continue
    return out


def _check_folders(root: Path, name: str, params) -> None:
    from pipeline.config import FolderSource

    for index, entry in enumerate(params.ingest.sources):
        if isinstance(entry, FolderSource):
            path = Path(entry.path).expanduser()
            path = path if path.is_absolute() else root / path
            if not path.is_dir():
                raise ProfileError(
                    f"profiles/{name}.yaml: ingest.sources[{index}].path: {path} is not a folder; "
                    f"create it (your photos) or edit the profile, then run `raincheck profile {name}` again"
                )


def install_profile(root: Path, name: str) -> list[str]:
    """Write profile `name` (`root`/profiles/`name`.yaml, merged onto its base) to `root`/params.yaml.

    Returns the lines to print: the backup note, a unified diff of params.yaml (old -> new) and
    what was written. Raises ProfileError (unknown profile, missing folder source, a backup in the
    way) and ParamsError (the profile does not validate), leaving params.yaml untouched.
    """
    from pipeline.config import load_params
    from pipeline.io import atomic_path

    root = Path(root)
    folder = root / "profiles"
    source = folder / f"{name}.yaml"
    if not source.is_file():
        available = sorted(path.stem for path in folder.glob("*.yaml"))
        raise ProfileError(f"no profile {name!r}; available: {', '.join(available) or '(none in ' + str(folder) + ')'}")
    params = load_params(source)  # refuse to install a profile that does not validate
    _check_folders(root, name, params)
    new = render(source)
    _check_rendered(new, source, params.model_dump(mode="json"))
    target = root / layout.PARAMS
    current = target.read_bytes() if target.is_file() else b""
    lines = []
    if current and current not in _rendered_profiles(folder):  # local edits: keep them
        keep_backup(target, "has local edits and")
        lines.append("[raincheck] params.yaml had local edits: saved as params.yaml.bak")
    diff = difflib.unified_diff(current.decode(errors="replace").splitlines(), new.decode().splitlines(),
                                "params.yaml (before)", f"params.yaml (profile {name})", lineterm="")
    lines.extend(list(diff) or ["[raincheck] params.yaml already holds this profile: no change"])
    with atomic_path(target) as tmp:
        tmp.write_bytes(new)
    base = "" if new == source.read_bytes() else " (merged onto its base)"
    lines.append(f"[raincheck] params.yaml <- profiles/{name}.yaml{base}")
    return lines


def keep_backup(target: Path, why: str = "") -> Path:
    """Copy `target` (a params file about to be replaced) to `target`.bak, atomically; returns the backup.

    A backup is never overwritten: ProfileError when an older, different one is already there (a
    backup byte-identical to `target` is kept as it is). `why` words the message ("has local edits and").
    Used by `raincheck profile` and `raincheck study apply` (pipeline/study_apply.py).
    """
    from pipeline.io import atomic_path

    backup = target.with_name(target.name + ".bak")
    current = target.read_bytes()
    if backup.is_file() and backup.read_bytes() != current:
        raise ProfileError(
            f"{target.name} {why + ' ' if why else ''}{backup} already holds an older backup; "
            f"move one of them away first ({target.name} was left as it is)"
        )
    with atomic_path(backup) as tmp:
        tmp.write_bytes(current)
    return backup
