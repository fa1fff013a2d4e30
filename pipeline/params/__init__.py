"""The params.yaml schema, one module per section; pipeline.config assembles them into Params.

base (Strict, ParamsError) · ingest · curate · rain (a custom rain recipe) · synthesis (suites,
rain entries) · models (prior.model, train.model) · training (prior, train) · evaluate (evaluate,
register) · study (schedule, study).
"""
