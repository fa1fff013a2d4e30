"""Models-from-code entry of the registered deraining model (MLflow runs this file when the model
is logged and again when it is loaded; nothing is pickled).

Input/output: a DataFrame with an `image` column of base64 PNG/JPEG, uint8 RGB of any size
(pipeline.serving.pyfunc.DerainPyfunc). Tiling comes from the logged model_config (`tile`, `overlap`).
"""

import mlflow

from pipeline.serving.pyfunc import DerainPyfunc

mlflow.models.set_model(DerainPyfunc())
