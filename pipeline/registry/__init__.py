"""MLflow registration, the gate and promotion. Promotion rules are pure (promotion.py); the MLflow
client is pipeline/tracking.py and the lineage digests pipeline/lineage.py (below this package)."""
