"""`raincheck predict IN OUT`: derain a file or a folder with a registered model.

Inputs and outputs are planned and checked before the model loads, so a wrong command line fails
in a second with one line. Then one bad image is reported and skipped, never the end of the run.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from pipeline import layout
from pipeline.config import Params

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class PredictError(ValueError):
    """A command line that cannot be run as given; the message names the path and what is allowed."""


def model_uri(params: Params, version: str | None) -> str:
    """`models:/<name>@champion` by default; a number selects a version, a word an alias."""
    name = params.register.model_name
    if version is None:
        return f"models:/{name}@champion"
    return f"models:/{name}/{version}" if str(version).isdigit() else f"models:/{name}@{version}"


def _folder_outputs(source: Path, target: Path, inputs: list[Path]) -> list[Path]:
    """`a/x.jpg` -> `target/a/x.png`; when two inputs share a stem (`same.png`, `same.jpg`) each
    keeps its suffix (`same.png.png`, `same.jpg.png`) so that neither overwrites the other."""
    by_output: dict[Path, list[Path]] = defaultdict(list)
    for path in inputs:
        by_output[target / path.relative_to(source).with_suffix(".png")].append(path)
    outputs = {}
    for out, group in by_output.items():
        for path in group:
            outputs[path] = out if len(group) == 1 else out.with_name(f"{path.name}.png")
    clashes = defaultdict(list)
    for path, out in outputs.items():
        clashes[out].append(path)
    for out, group in clashes.items():
        if len(group) > 1:
            names = ", ".join(str(p) for p in group)
            raise PredictError(f"{names}: would all be written to {out}; rename one of them")
    return [outputs[p] for p in inputs]


def plan(source: Path, target: Path) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """(input, output) pairs and (entry, reason) skips for `predict source target`.

    Raises PredictError / FileNotFoundError for a command line that would lose or overwrite data:
    output == input, an output inside the input folder, a folder onto a file, an image onto a
    file that is not a .png."""
    source, target = Path(source), Path(target)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such image or folder")
    if source.resolve() == target.resolve():
        raise PredictError(f"{target}: the output is the input; give another output path (the input photos are never overwritten)")
    skipped: list[tuple[Path, str]] = []
    if source.is_dir():
        if target.exists() and not target.is_dir():
            raise PredictError(f"{target}: exists and is not a folder; a folder input needs an output folder")
        if target.resolve().is_relative_to(source.resolve()):
            raise PredictError(f"{target}: is inside the input folder {source}; choose an output folder outside it")
        candidates = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        inputs = []
        for path in candidates:
            if path.is_file():
                inputs.append(path)
            else:
                skipped.append((path, "not a regular file (a folder, or a dangling link)"))
        outputs = _folder_outputs(source, target, inputs)
    else:
        if target.is_dir() or not target.suffix:
            out = target / f"{source.stem}.png"
        elif target.suffix.lower() != ".png":
            raise PredictError(f"{target}: an output file must end in .png (derained images are written as PNG), or name a folder")
        else:
            out = target
        inputs, outputs = [source], [out]
    for out in outputs:
        if out.exists() and not out.is_file():
            raise PredictError(f"{out}: exists and is not a file; remove it or choose another output")
    if not inputs:
        raise FileNotFoundError(f"{source}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return list(zip(inputs, outputs)), skipped


def predict_paths(params: Params, source: Path, target: Path, version: str | None = None,
                  tile: int | None = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Derain `source` (an image or a folder of images) into `target`.

    Returns (written outputs, (input, reason) failures): an image that does not decode or cannot be
    written is a failure and the others still run. Images larger than `tile` (default:
    evaluate.tile) are tiled with evaluate.overlap."""
    pairs, failures = plan(source, target)  # before the model: wrong paths fail fast

    import mlflow
    from tqdm import tqdm

    from pipeline.inference import derain_array
    from pipeline.io import save_png
    from pipeline.models.factory import load_derain_model
    from pipeline.tracking import mlflow_client, resolve_version
    from pipeline.serving.codec import PayloadError, read_image

    resolve_version(mlflow_client(), params.register.model_name, version)  # a clear error for a wrong version
    uri = model_uri(params, version)
    local = Path(mlflow.artifacts.download_artifacts(f"{uri}"))
    checkpoint = next(local.rglob(layout.MODEL), None)
    if checkpoint is None:
        raise FileNotFoundError(f"{uri}: no model.pt checkpoint in the registered model")
    model = load_derain_model(checkpoint)
    written = []
    for path, out in tqdm(pairs, desc="derain", unit="img"):
        try:
            # The ingest decoder and its limits: a photo is seen as ingest would see it.
            if path.stat().st_size > params.ingest.max_file_bytes:
                raise PayloadError(f"{path}: {path.stat().st_size} bytes > ingest.max_file_bytes={params.ingest.max_file_bytes}")
            image = read_image(path.read_bytes(), params.ingest.max_pixels, what=str(path))
            save_png(out, derain_array(model, image, tile=tile or params.evaluate.tile, overlap=params.evaluate.overlap))
        except PayloadError as error:
            failures.append((path, str(error).removeprefix(f"{path}").lstrip(": ") or "does not decode"))
            continue
        except OSError as error:  # unreadable input, unwritable output: this image only
            failures.append((path, f"{type(error).__name__}: {error.strerror or error}"))
            continue
        written.append(out)
    return written, failures
