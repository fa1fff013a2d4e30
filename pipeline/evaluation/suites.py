"""The suites an evaluation reads: synthesized ones and the user's folders, matched by image id.

A synthesized suite is `{suites}/<name>/{clean,rainy,rain}/<image_id>.png`; `evaluate.folders`
adds the user's own: `paired` (clean/ + rainy/, optional rain/) are scored like synthesized
suites, `unpaired` (real rainy photos) are only shown in the report. Files are matched by stem
and checked (same ids, same sizes) with errors naming the folder or file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import PairedFolderSuite, Params
from pipeline.io import IMAGE_SUFFIXES, read_image  # the one image reader and suffix list


@dataclass(frozen=True)
class SuiteItem:
    """One image of a suite: its rainy input, clean reference and rain layer (None when absent)."""

    image_id: str
    rainy: Path
    clean: Path | None = None
    rain: Path | None = None


@dataclass(frozen=True)
class Suite:
    """A named set of images. `paired` suites are scored; `unpaired` ones are only shown."""

    name: str
    kind: str  # "paired" | "unpaired"
    items: tuple[SuiteItem, ...]
    dry: bool = False  # a `clean` suite: no rain, the input is the reference (psnr/<suite> = PSNR(output, input))

    @property
    def has_masks(self) -> bool:
        return self.kind == "paired" and all(item.rain is not None for item in self.items)


def _images_by_id(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            if path.stem in found:
                raise ValueError(f"{folder}: two images share the id {path.stem!r}: {found[path.stem].name}, {path.name}")
            found[path.stem] = path
    return found


def _require_folder(folder: Path, what: str, hint: str = "") -> None:
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: folder {folder} not found{hint}")


def _paired_items(name: str, folder: Path, suffixes: tuple[str, ...], need_rain: bool) -> tuple[SuiteItem, ...]:
    """Match clean/, rainy/ and (when present or needed) rain/ by file stem."""
    for sub in ("clean", "rainy") + (("rain",) if need_rain else ()):
        _require_folder(folder / sub, f"suite {name!r}")
    clean = _images_by_id(folder / "clean", suffixes)
    rainy = _images_by_id(folder / "rainy", suffixes)
    rain = _images_by_id(folder / "rain", suffixes) if (folder / "rain").is_dir() else None
    if not rainy:
        raise ValueError(f"suite {name!r}: no images in {folder / 'rainy'} (allowed: {', '.join(suffixes)})")
    layers = [("clean", clean)] + ([("rain", rain)] if rain is not None else [])
    for sub, found in layers:
        missing = sorted(set(rainy) ^ set(found))
        if missing:
            examples = ", ".join(missing[:5])
            raise ValueError(f"suite {name!r}: rainy/ and {sub}/ in {folder} do not hold the same image ids; unmatched: {examples}")
    return tuple(SuiteItem(i, rainy[i], clean[i], rain[i] if rain is not None else None) for i in sorted(rainy))


def load_suites(params: Params, root: Path) -> list[Suite]:
    """The suites of `params.evaluate`: synthesized ones first, then the user's folders."""
    root = Path(root)
    suites = []
    for name in params.evaluate.suites:
        folder = root / params.paths.suites / name
        _require_folder(folder, f"suite {name!r}", " (run `raincheck synthesize` first)")
        dry = params.synthesize.suites[name].generator == "clean"
        suites.append(Suite(name, "paired", _paired_items(name, folder, (".png",), need_rain=True), dry=dry))
    for spec in params.evaluate.folders:
        folder = root / spec.path  # an absolute `path` stays absolute
        _require_folder(folder, f"evaluate.folders {spec.name!r}")
        if isinstance(spec, PairedFolderSuite):
            suites.append(Suite(spec.name, "paired", _paired_items(spec.name, folder, IMAGE_SUFFIXES, need_rain=False)))
            continue
        images = _images_by_id(folder, IMAGE_SUFFIXES)
        if not images:
            raise ValueError(f"evaluate.folders {spec.name!r}: no images in {folder} (allowed: {', '.join(IMAGE_SUFFIXES)})")
        suites.append(Suite(spec.name, "unpaired", tuple(SuiteItem(i, images[i]) for i in sorted(images))))
    return suites


def load_item(item: SuiteItem) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(rainy, clean, rain) arrays; sizes checked against the rainy image, naming both files."""
    rainy = read_image(item.rainy)
    clean = None if item.clean is None else read_image(item.clean)
    rain = None if item.rain is None else read_image(item.rain, grey=True)
    for other, path in ((clean, item.clean), (rain, item.rain)):
        if other is not None and other.shape[:2] != rainy.shape[:2]:
            raise ValueError(
                f"size mismatch: {path} is {other.shape[1]}x{other.shape[0]} but {item.rainy} is "
                f"{rainy.shape[1]}x{rainy.shape[0]} (width x height)"
            )
    return rainy, clean, rain
