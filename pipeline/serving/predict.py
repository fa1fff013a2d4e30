"""`raincheck predict IN OUT`: derain a file or a folder with a registered model."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Params

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def model_uri(params: Params, version: str | None) -> str:
    """`models:/<name>@champion` by default; a number selects a version, a word an alias."""
    name = params.register.model_name
    if version is None:
        return f"models:/{name}@champion"
    return f"models:/{name}/{version}" if str(version).isdigit() else f"models:/{name}@{version}"


def predict_paths(params: Params, source: Path, target: Path, version: str | None = None, tile: int | None = None) -> list[Path]:
    """Derain `source` (an image or a folder of images) into `target`; returns written paths.
    Images larger than `tile` (default: evaluate.tile) are tiled with evaluate.overlap."""
    import mlflow
    from tqdm import tqdm

    from pipeline.io import save_png
    from pipeline.registry.register import mlflow_client
    from pipeline.serving.codec import read_image
    from pipeline.inference import derain_array
    from pipeline.models.factory import load_derain_model

    source, target = Path(source), Path(target)
    if source.is_dir():
        inputs = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        outputs = [target / p.relative_to(source).with_suffix(".png") for p in inputs]
    elif source.is_file():
        inputs, outputs = [source], [target if target.suffix else target / f"{source.stem}.png"]
    else:
        raise FileNotFoundError(f"{source}: no such image or folder")
    if not inputs:
        raise FileNotFoundError(f"{source}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")

    mlflow_client()  # sets the tracking/registry URIs
    uri = model_uri(params, version)
    local = Path(mlflow.artifacts.download_artifacts(f"{uri}"))
    checkpoint = next(local.rglob("model.pt"), None)
    if checkpoint is None:
        raise FileNotFoundError(f"{uri}: no model.pt checkpoint in the registered model")
    model = load_derain_model(checkpoint)
    for path, out in tqdm(list(zip(inputs, outputs)), desc="derain", unit="img"):
        image = read_image(path.read_bytes(), what=str(path))
        save_png(out, derain_array(model, image, tile=tile or params.evaluate.tile, overlap=params.evaluate.overlap))
    return outputs
