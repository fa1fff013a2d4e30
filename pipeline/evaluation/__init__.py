"""Evaluation: masked metrics (rain region vs background), suites, the `evaluate` step, report.png."""
