"""Serving the registered model: the image codec, the MLflow pyfunc, and `raincheck predict`."""
