"""Training: the VQ prior (`prior` step) and the deraining network (`train` step).

Entry functions: :func:`pipeline.training.prior.run_prior` and
:func:`pipeline.training.train.run_train`; both resume an interrupted run from its checkpoint.
"""
