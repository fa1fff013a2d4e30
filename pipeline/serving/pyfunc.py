"""The registered deraining model as a self-contained MLflow pyfunc.

Input: a DataFrame with an `image` column of base64 PNG/JPEG (any size; large images are tiled).
Output: a DataFrame with an `image` column of base64 PNG, same size as the input.
The checkpoint (with the prior it renders through) travels as an artifact; the `pipeline`
package travels as code, so `mlflow.pyfunc.load_model("models:/<name>@champion")` works in a
fresh process without raincheck installed (torch, timm, pillow, pandas needed).
"""

from __future__ import annotations

import mlflow.pyfunc

CHECKPOINT_ARTIFACT = "checkpoint"


class DerainPyfunc(mlflow.pyfunc.PythonModel):
    """Wraps `pipeline.models.factory.load_derain_model` + tiled inference."""

    def __init__(self, tile: int = 512, overlap: int = 32):
        self.tile = tile
        self.overlap = overlap

    def load_context(self, context) -> None:
        from pipeline.models.factory import load_derain_model

        self.model = load_derain_model(context.artifacts[CHECKPOINT_ARTIFACT])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from pipeline.inference import derain_array
        from pipeline.serving.codec import IMAGE_COLUMN, PayloadError, decode_image, encode_png

        if not isinstance(model_input, pd.DataFrame) or IMAGE_COLUMN not in model_input.columns:
            raise PayloadError(f"expected a DataFrame with an '{IMAGE_COLUMN}' column of base64 images")
        outputs = []
        for text in model_input[IMAGE_COLUMN]:
            image = decode_image(text)
            outputs.append(encode_png(derain_array(self.model, image, tile=self.tile, overlap=self.overlap)))
        return pd.DataFrame({IMAGE_COLUMN: outputs})


def signature():
    """String column in, string column out: image size is free (not fixed by the signature)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    schema = Schema([ColSpec("string", "image")])
    return ModelSignature(inputs=schema, outputs=schema)
