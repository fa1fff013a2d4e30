"""The registered deraining model as a self-contained MLflow pyfunc.

Input: a DataFrame with an `image` column of base64 image files (PNG, JPEG, TIFF, ...; decoded as
ingest decodes them; up to codec.SERVING_MAX_PIXELS pixels; large images are tiled).
Output: a DataFrame with an `image` column of base64 PNG, same size as the input, and an `error`
column (None, or why that row was refused). A request whose every row is refused raises
MlflowException INVALID_PARAMETER_VALUE: HTTP 400 with the message.
The checkpoint (with the prior it renders through) travels as an artifact; the `pipeline`
package travels as code, so `mlflow.pyfunc.load_model("models:/<name>@champion")` works in a
fresh process without raincheck installed (torch, timm, pillow, pandas needed).
"""

from __future__ import annotations

import threading
from pathlib import Path

import mlflow.pyfunc

CHECKPOINT_ARTIFACT = "checkpoint"
# Models from code: log_model gets these files' paths, not pickled objects (MLflow's warning on
# cloudpickle); each file builds its model with mlflow.models.set_model.
DERAIN_CODE = Path(__file__).with_name("derain_model.py")
PRIOR_CODE = Path(__file__).with_name("prior_model.py")


class DerainPyfunc(mlflow.pyfunc.PythonModel):
    """Wraps `pipeline.models.factory.load_derain_model` + tiled inference.

    The one predict code of the deraining model: `mlflow models serve` runs it, and so does
    `raincheck predict`, through mlflow.pyfunc.load_model for a registered version and through
    `load_context` on a local checkpoint (pipeline.serving.predict). model_config: `tile` and
    `overlap` (inference.derain_array), `max_pixels` (the request size limit)."""

    # The I/O contract is the explicit string-column signature, not predict()'s type hints.
    _skip_type_hint_validation = True

    def __init__(self, tile: int = 1024, overlap: int = 32, max_pixels: int | None = None):
        from pipeline.serving.codec import SERVING_LIMIT_NAME, SERVING_MAX_PIXELS

        self.tile = tile
        self.overlap = overlap
        self.max_pixels = max_pixels or SERVING_MAX_PIXELS
        self.max_pixels_name = SERVING_LIMIT_NAME

    def load_context(self, context) -> None:
        from pipeline.runtime import fast_allocation

        config = getattr(context, "model_config", None) or {}
        self.tile, self.overlap = int(config.get("tile", self.tile)), int(config.get("overlap", self.overlap))
        self.max_pixels = int(config.get("max_pixels", self.max_pixels))

        fast_allocation()  # the serving process is not started by raincheck: set it here
        from pipeline.models.factory import load_derain_model

        self.model = load_derain_model(context.artifacts[CHECKPOINT_ARTIFACT])

    def limit(self, max_pixels: int, name: str) -> None:
        """Refuse images of more than `max_pixels` pixels, calling the limit `name` in the refusal.

        For `raincheck predict`, whose limit is ingest's (a photo, however large, is tiled), not the
        server's request limit. (Not a model_config key: MLflow drops keys that a version did not
        log, and versions registered before this method logged only tile and overlap.)"""
        self.max_pixels, self.max_pixels_name = int(max_pixels), name

    def predict(self, context, model_input, params=None):
        from pipeline.inference import derain_array

        return predict_rows(model_input, lambda image: derain_array(self.model, image, tile=self.tile, overlap=self.overlap),
                            self.max_pixels, self.max_pixels_name)


# One image is computed at a time per process: the scoring server runs each request in its own
# thread, and concurrent images would add their activations up (six concurrent 2048² requests
# peaked at 3.46 GB); torch already uses every core for one image, so queuing costs no throughput.
_COMPUTE = threading.Lock()


def predict_rows(model_input, transform, max_pixels: int, limit_name: str | None = None):
    """Apply `transform` (uint8 (H, W, 3) -> uint8 (H, W, 3)) to each row's base64 image.

    A row of more than `max_pixels` pixels is refused, the message calling the limit `limit_name`
    (default: codec.SERVING_LIMIT_NAME). Returns a DataFrame with `image` (base64 PNG, None for a bad row) and `error` (None, or
    "row N: column 'image': reason" for a row that does not decode or exceeds `max_pixels`): one bad
    row does not fail the others. When no row succeeds, raises MlflowException
    INVALID_PARAMETER_VALUE, which the scoring server answers with HTTP 400 and this message (no
    stack trace).
    """
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from pipeline.serving.codec import ERROR_COLUMN, IMAGE_COLUMN, SERVING_LIMIT_NAME, PayloadError, decode_image, encode_png

    if not isinstance(model_input, pd.DataFrame) or IMAGE_COLUMN not in model_input.columns:
        columns = list(model_input.columns) if isinstance(model_input, pd.DataFrame) else type(model_input).__name__
        raise MlflowException.invalid_parameter_value(
            f"expected a DataFrame with an '{IMAGE_COLUMN}' column of base64 images (PNG, JPEG, TIFF, ...), got {columns}")
    images, errors = [], []
    for row, text in enumerate(model_input[IMAGE_COLUMN]):
        try:
            image = decode_image(text, max_pixels, what=f"row {row}: column '{IMAGE_COLUMN}'", limit_name=limit_name or SERVING_LIMIT_NAME)
        except PayloadError as error:
            images.append(None)
            errors.append(str(error))
            continue
        with _COMPUTE:
            images.append(encode_png(transform(image)))
        errors.append(None)
    if len(errors) and all(errors):
        shown = "; ".join(errors[:5]) + (f"; ... ({len(errors)} rows)" if len(errors) > 5 else "")
        raise MlflowException.invalid_parameter_value(shown)
    # object columns: a missing value stays None (JSON null), never NaN
    return pd.DataFrame({IMAGE_COLUMN: pd.Series(images, dtype=object), ERROR_COLUMN: pd.Series(errors, dtype=object)})


def signature():
    """String column in; string columns out (`image`, and `error` for a row that failed): image
    size is free (not fixed by the signature)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec("string", "image")])
    outputs = Schema([ColSpec("string", "image", required=False), ColSpec("string", "error", required=False)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example():
    """A one-row request: an 8x8 grey-gradient RGB PNG, base64 (what `mlflow models serve` expects).

    Logged with the model (MLflow validates serving with it and shows it in the UI)."""
    import numpy as np
    import pandas as pd

    from pipeline.serving.codec import IMAGE_COLUMN, encode_png

    ramp = np.linspace(0, 255, 64, dtype=np.uint8).reshape(8, 8)
    return pd.DataFrame({IMAGE_COLUMN: [encode_png(np.stack([ramp] * 3, axis=-1))]})


class PriorPyfunc(mlflow.pyfunc.PythonModel):
    """The content prior as a pyfunc: images in, their reconstructions (what the prior can draw) out."""

    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from pipeline.models.factory import load_prior

        self.prior = load_prior(context.artifacts[CHECKPOINT_ARTIFACT])

    def predict(self, context, model_input, params=None):
        from pipeline.serving.codec import SERVING_MAX_PIXELS

        return predict_rows(model_input, self._reconstruct, SERVING_MAX_PIXELS)

    def _reconstruct(self, image):
        """uint8 (H, W, 3) -> the prior's reconstruction, uint8 (H, W, 3)."""
        import torch
        import torch.nn.functional as F

        stride = self.prior.stride
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        h, w = x.shape[-2:]
        # Reflect-pad to the prior's stride, reconstruct, crop back to the input size.
        x = F.pad(x, (0, -w % stride, 0, -h % stride), mode="reflect" if min(h, w) > stride else "replicate")
        with torch.no_grad():
            recon = self.prior(x)[0][..., :h, :w]
        return (recon[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
