"""`raincheck profile NAME`: install profiles/NAME.yaml as params.yaml, never losing local edits.

A profile is refused before anything is written when it does not validate or names a folder
source that does not exist. A params.yaml that is not a byte copy of one of the profiles holds
local edits: it is saved as params.yaml.bak first (refused when an older, different backup is
already there). Both files are written atomically (temporary sibling, then rename).
"""

from __future__ import annotations

from pathlib import Path

from pipeline import layout


class ProfileError(ValueError):
    """A profile that cannot be installed; the message names the file or key and what to do."""


def install_profile(root: Path, name: str) -> list[str]:
    """Replace `root`/params.yaml with `root`/profiles/`name`.yaml; returns the lines to print.

    Raises ProfileError (unknown profile, missing folder source, a backup in the way) and
    ParamsError (the profile does not validate), leaving params.yaml untouched.
    """
    from pipeline.config import FolderSource, load_params
    from pipeline.io import atomic_path

    root = Path(root)
    folder = root / "profiles"
    source = folder / f"{name}.yaml"
    available = sorted(path.stem for path in folder.glob("*.yaml"))
    if not source.is_file():
        raise ProfileError(f"no profile {name!r}; available: {', '.join(available) or '(none in ' + str(folder) + ')'}")
    params = load_params(source)  # refuse to install a profile that does not validate
    for index, entry in enumerate(params.ingest.sources):
        if isinstance(entry, FolderSource):
            path = Path(entry.path).expanduser()
            path = path if path.is_absolute() else root / path
            if not path.is_dir():
                raise ProfileError(
                    f"profiles/{name}.yaml: ingest.sources[{index}].path: {path} is not a folder; "
                    f"create it (your photos) or edit the profile, then run `raincheck profile {name}` again"
                )
    target, backup = root / layout.PARAMS, root / "params.yaml.bak"
    new = source.read_bytes()
    lines = []
    if target.is_file():
        current = target.read_bytes()
        profiles = {path.read_bytes() for path in folder.glob("*.yaml")}
        if current not in profiles:  # local edits: keep them
            if backup.is_file() and backup.read_bytes() != current:
                raise ProfileError(
                    f"params.yaml has local edits and {backup} already holds an older backup; "
                    "move one of them away first (params.yaml was left as it is)"
                )
            with atomic_path(backup) as tmp:
                tmp.write_bytes(current)
            lines.append("[raincheck] params.yaml had local edits: saved as params.yaml.bak")
    with atomic_path(target) as tmp:
        tmp.write_bytes(new)
    lines.append(f"[raincheck] params.yaml <- profiles/{name}.yaml")
    return lines
