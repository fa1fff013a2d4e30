"""The registered deraining model as a self-contained MLflow pyfunc.

Input: a DataFrame with an `image` column of base64 PNG/JPEG (any size; large images are tiled).
Output: a DataFrame with an `image` column of base64 PNG, same size as the input.
The checkpoint (with the prior it renders through) travels as an artifact; the `pipeline`
package travels as code, so `mlflow.pyfunc.load_model("models:/<name>@champion")` works in a
fresh process without raincheck installed (torch, timm, pillow, pandas needed).
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc

CHECKPOINT_ARTIFACT = "checkpoint"
# Models from code: log_model gets these files' paths, not pickled objects (MLflow's warning on
# cloudpickle); each file builds its model with mlflow.models.set_model.
DERAIN_CODE = Path(__file__).with_name("derain_model.py")
PRIOR_CODE = Path(__file__).with_name("prior_model.py")


class DerainPyfunc(mlflow.pyfunc.PythonModel):
    """Wraps `pipeline.models.factory.load_derain_model` + tiled inference."""

    # The I/O contract is the explicit string-column signature, not predict()'s type hints.
    _skip_type_hint_validation = True

    def __init__(self, tile: int = 1024, overlap: int = 32):
        self.tile = tile
        self.overlap = overlap

    def load_context(self, context) -> None:
        from pipeline.runtime import fast_allocation

        config = getattr(context, "model_config", None) or {}
        self.tile, self.overlap = int(config.get("tile", self.tile)), int(config.get("overlap", self.overlap))

        fast_allocation()  # the serving process is not started by raincheck: set it here
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
        import numpy as np
        import pandas as pd
        import torch
        import torch.nn.functional as F

        from pipeline.serving.codec import IMAGE_COLUMN, PayloadError, decode_image, encode_png

        if not isinstance(model_input, pd.DataFrame) or IMAGE_COLUMN not in model_input.columns:
            raise PayloadError(f"expected a DataFrame with an '{IMAGE_COLUMN}' column of base64 images")
        stride = self.prior.stride
        outputs = []
        for text in model_input[IMAGE_COLUMN]:
            image = decode_image(text)
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
            h, w = x.shape[-2:]
            # Reflect-pad to the prior's stride, reconstruct, crop back to the input size.
            x = F.pad(x, (0, -w % stride, 0, -h % stride), mode="reflect" if min(h, w) > stride else "replicate")
            with torch.no_grad():
                recon = self.prior(x)[0][..., :h, :w]
            outputs.append(encode_png((recon[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy().astype(np.uint8)))
        return pd.DataFrame({IMAGE_COLUMN: outputs})
