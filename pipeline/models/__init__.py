"""Architectures and the generative prior.

Build models with :func:`pipeline.models.factory.create_model` (a params spec, a dict with a
``type:`` key, or a registered variant name) and load trained ones with
:func:`pipeline.models.factory.load_derain_model` / :func:`pipeline.models.factory.load_prior`.
Every image tensor is float32 NCHW in [0, 1] unless a docstring says otherwise.
"""
