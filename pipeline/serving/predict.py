"""`raincheck predict IN OUT`: derain a file or a folder with a registered model (or a local checkpoint).

The images go through the served model's own code: the registered version is loaded with
mlflow.pyfunc.load_model, as `mlflow models serve` loads it, and each file is sent to its predict
as a one-row request; the PNG it answers is written as is. So the CLI and the HTTP server give
byte-identical images (tests/integration/test_predict_pyfunc.py). A local checkpoint is wrapped in the same
class (pyfunc.DerainPyfunc).

Inputs and outputs are planned and checked before the model loads, so a wrong command line fails
in a second with one line. Then one bad image is reported and skipped, never the end of the run.
"""

from __future__ import annotations

import base64
import re
from collections import defaultdict
from pathlib import Path
from typing import Callable

from pipeline.config import Params
from pipeline.io import IMAGE_SUFFIXES

INGEST_LIMIT = "ingest.max_pixels"  # predict reads photos as ingest does, up to ingest's size limit


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
        raise FileNotFoundError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return list(zip(inputs, outputs)), skipped


def registered_model(params: Params, version: str | None, config: dict) -> Callable:
    """The registered version as `mlflow models serve` loads it (mlflow.pyfunc.load_model, with
    `config` over its logged tile and overlap) and ingest's size limit; returns its predict
    (DataFrame -> DataFrame).

    A version or alias that does not exist is a RegistryError listing what does, before any download."""
    import mlflow.pyfunc

    from pipeline.tracking import mlflow_client, resolve_version

    resolve_version(mlflow_client(), params.register.model_name, version)
    loaded = mlflow.pyfunc.load_model(model_uri(params, version), model_config=config)
    loaded.unwrap_python_model().limit(params.ingest.max_pixels, INGEST_LIMIT)
    return loaded.predict


def checkpoint_model(params: Params, checkpoint: Path, config: dict) -> Callable:
    """A local `model.pt` in the served model's class (pyfunc.DerainPyfunc, loaded as MLflow loads
    it, with `config` as its model_config) and ingest's size limit; returns its predict."""
    from mlflow.pyfunc import PythonModelContext

    from pipeline.serving.pyfunc import CHECKPOINT_ARTIFACT, DerainPyfunc

    model = DerainPyfunc()
    model.load_context(PythonModelContext({CHECKPOINT_ARTIFACT: str(checkpoint)}, config))
    model.limit(params.ingest.max_pixels, INGEST_LIMIT)
    return lambda frame: model.predict(None, frame)


def _derain_file(predict: Callable, path: Path, out: Path) -> None:
    """One image file through the served model's predict; its PNG answer written to `out` as is.

    Raises PayloadError with the model's reason for an image it refuses."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from pipeline.io import write_bytes
    from pipeline.serving.codec import ERROR_COLUMN, IMAGE_COLUMN, PayloadError, encode_file

    try:
        answer = predict(pd.DataFrame({IMAGE_COLUMN: [encode_file(path.read_bytes())]}))
    except MlflowException as error:  # every row refused (here: the one): the served model's 400
        raise PayloadError(_row_reason(error.message)) from None
    if answer[ERROR_COLUMN].iloc[0]:
        raise PayloadError(_row_reason(answer[ERROR_COLUMN].iloc[0]))
    write_bytes(out, base64.b64decode(answer[IMAGE_COLUMN].iloc[0]))


def _row_reason(message: str) -> str:
    """"row 0: column 'image': REASON" (the served model's words for a request) -> REASON."""
    return re.sub(r"^row 0: column '[^']*': ", "", str(message)) or "does not decode"


def predict_paths(params: Params, source: Path, target: Path, version: str | None = None,
                  tile: int | None = None, checkpoint: Path | None = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Derain `source` (an image or a folder of images) into `target` with the served model's code.

    The model is registered version `version` (default: the champion), or the local `checkpoint`
    file when given. Returns (written outputs, (input, reason) failures): an image that does not
    decode or cannot be written is a failure and the others still run. Images larger than `tile`
    (default: evaluate.tile) are tiled with evaluate.overlap; the size limits are ingest's."""
    pairs, failures = plan(source, target)  # before the model: wrong paths fail fast
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint file (a model.pt written by `raincheck train`)")

    from tqdm import tqdm

    from pipeline.serving.codec import PayloadError

    config = {"tile": tile or params.evaluate.tile, "overlap": params.evaluate.overlap}
    predict = checkpoint_model(params, Path(checkpoint), config) if checkpoint is not None else registered_model(params, version, config)
    written = []
    for path, out in tqdm(pairs, desc="derain", unit="img"):
        try:
            if path.stat().st_size > params.ingest.max_file_bytes:
                raise PayloadError(f"{path.stat().st_size} bytes > ingest.max_file_bytes={params.ingest.max_file_bytes}")
            _derain_file(predict, path, out)
        except PayloadError as error:
            failures.append((path, str(error)))
            continue
        except OSError as error:  # unreadable input, unwritable output: this image only
            failures.append((path, f"{type(error).__name__}: {error.strerror or error}"))
            continue
        written.append(out)
    return written, failures
