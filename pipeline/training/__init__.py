"""Training: the VQ prior (`prior` step) and the deraining network (`train` step).

Entry functions: :func:`pipeline.training.prior.run_prior` and
:func:`pipeline.training.train.run_train`; both resume an interrupted run from its checkpoint,
validate, log and write their outputs through one shared session (`session.py`).
"""
