"""raincheck: a data-to-deployment pipeline for image deraining models that generalize.

The library has no Prefect import and no import-time side effects; heavy packages (torch, mlflow,
great_expectations) are imported inside the functions that need them so the CLI stays fast.
"""

__version__ = "0.1.0"
