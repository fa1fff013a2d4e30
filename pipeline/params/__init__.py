"""The params.yaml schema, one module per section; pipeline.config assembles them into Params.

base (Strict, ParamsError) · ingest · curate · rain (a custom rain recipe) · synthesis (suites,
rain entries) · models (prior.model, train.model) · training (prior, train) · evaluate (evaluate,
register) · study (schedule, study) · overlay (`extends:`/`replace:` profile overlays, the merge rule).

A key that changes a result has no default, or a default equal to profiles/cpu.yaml's value
(tests/unit/test_required_params.py checks every key cpu.yaml sets).
"""
