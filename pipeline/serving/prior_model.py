"""Models-from-code entry of the registered content prior (MLflow runs this file when the model
is logged and again when it is loaded; nothing is pickled).

Input/output: a DataFrame with an `image` column of base64 PNG/JPEG; out come the prior's
reconstructions, same size (pipeline.serving.pyfunc.PriorPyfunc).
"""

import mlflow

from pipeline.serving.pyfunc import PriorPyfunc

mlflow.models.set_model(PriorPyfunc())
