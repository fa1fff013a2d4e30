"""Prefect flows: orchestration only. The logic lives in `pipeline`; DVC executes the stages."""
