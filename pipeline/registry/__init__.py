"""MLflow registration, lineage and promotion. Promotion rules are pure (promotion.py)."""
