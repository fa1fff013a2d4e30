"""File names of the artifacts that one stage writes and another part of the code reads.

Spelled here once; each stage's folder comes from params.yaml (`paths.*`), so a path is
`root / params.paths.<folder> / <name>`. dvc.yaml spells the same names in its outs and metrics
(YAML cannot import them): tests/test_stages.py checks that the two agree.

A leaf module with no imports, deliberately: every stage that writes or reads one of these files
imports it, so it is a code dep of those stages in dvc.yaml, and an edit here re-runs them.
"""

from __future__ import annotations

METRICS = "metrics.json"  # a stage's headline numbers (prior, train, evaluate); DVC metrics
MODEL = "model.pt"  # the deraining network's checkpoint (train)
PRIOR = "prior.pt"  # the content prior's checkpoint (prior)
LOG = "log.csv"  # a training stage's curve, one row per logged step (prior, train); DVC plots
