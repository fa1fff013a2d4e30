"""Overlay params files: `extends: BASE` at the top, then only the keys that differ from BASE.

    extends: cpu                  # profiles/cpu.yaml, resolved next to this file
    replace: [synthesize.suites]  # optional: these mappings replace the base's instead of merging
    train:
      iterations: 100000

The merge rule (:func:`merge_into`): mappings merge key by key; lists and scalars replace; a
mapping named under `replace:` (dotted, from the top of the overlay) replaces the base's whole.
A base may itself be an overlay (a chain); a cycle is an error. Errors name the overlay file and
the key. pipeline.config.read_params reads a file through this module; `raincheck profile`
(pipeline.profiles) writes the merged result into params.yaml with the base's comments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, MutableMapping

from pipeline.params.base import ParamsError

EXTENDS, REPLACE = "extends", "replace"  # the overlay's own keys: never part of the merged params


def base_path(overlay: Path, extends: object) -> Path:
    """The file `extends:` names: a profile name (`cpu`) or a .yaml path, relative to the overlay's folder."""
    if not isinstance(extends, str) or not extends.strip():
        raise ParamsError(f"{overlay}: extends: must name a base params file (e.g. `extends: cpu`), got {extends!r}")
    name = extends if extends.endswith((".yaml", ".yml")) else f"{extends}.yaml"
    path = overlay.parent / name
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in overlay.parent.glob("*.yaml"))) or "none"
        raise ParamsError(f"{overlay}: extends: {extends!r}: no file {path} (in {overlay.parent}: {available})")
    return path


def replaced_keys(overlay: Path, raw: Mapping, replace: object) -> set[tuple[str, ...]]:
    """The dotted keys of `replace:` as tuples; each must be a mapping the overlay itself sets."""
    if replace is None:
        return set()
    if not isinstance(replace, list) or not all(isinstance(key, str) for key in replace):
        raise ParamsError(f"{overlay}: replace: must be a list of dotted keys (e.g. [train.model]), got {replace!r}")
    keys = set()
    for dotted in replace:
        node: Any = raw
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ParamsError(f"{overlay}: replace: {dotted!r} is not a key this file sets (check its spelling)")
            node = node[part]
        if not isinstance(node, Mapping):
            raise ParamsError(f"{overlay}: replace: {dotted!r} is not a mapping (lists and values always replace)")
        keys.add(tuple(dotted.split(".")))
    return keys


Assign = Callable[[MutableMapping, Any, Any, Mapping], None]  # (base mapping, key, value, overlay mapping)


def merge_into(base: MutableMapping, overlay: Mapping, replace: set[tuple[str, ...]] = frozenset(),
               assign: Assign | None = None, _at: tuple[str, ...] = ()) -> None:
    """Merge `overlay` into `base` in place: mappings key by key, everything else (and `replace`) replaces.

    `assign(base_mapping, key, value, overlay_mapping)` sets one key (default: item assignment);
    the profile writer passes one that also keeps the base's comments in place.
    """
    for key, value in overlay.items():
        here = (*_at, str(key))
        if isinstance(value, Mapping) and isinstance(base.get(key), MutableMapping) and here not in replace:
            merge_into(base[key], value, replace, assign, here)
        elif assign is None:
            base[key] = value
        else:
            assign(base, key, value, overlay)


def split_overlay(path: Path, raw: object) -> tuple[Path | None, set[tuple[str, ...]], object]:
    """(base file or None, replaced keys, the params without `extends`/`replace`) of one loaded file."""
    if not isinstance(raw, Mapping) or EXTENDS not in raw:
        if isinstance(raw, Mapping) and REPLACE in raw:
            raise ParamsError(f"{path}: replace: only an overlay (a file with `extends:`) can replace keys")
        return None, set(), raw
    params = {key: value for key, value in raw.items() if key not in (EXTENDS, REPLACE)}
    return base_path(path, raw[EXTENDS]), replaced_keys(path, params, raw.get(REPLACE)), params


def resolve_chain(path: Path, load: Callable[[Path], object]) -> list[tuple[Path, set, object]]:
    """[(file, replaced keys, params)] from the root base to `path`; `load(file)` parses one file."""
    chain: list[tuple[Path, set, object]] = []
    current: Path | None = path
    while current is not None:
        if any(current.resolve() == seen.resolve() for seen, _, _ in chain):
            names = " -> ".join(str(file) for file, _, _ in chain)
            raise ParamsError(f"{path}: extends: a cycle ({names} -> {current})")
        base, replace, params = split_overlay(current, load(current))
        chain.append((current, replace, params))
        current = base
    return list(reversed(chain))
