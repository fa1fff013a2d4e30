"""File names the code spells: the artifacts one stage writes and another part of the code reads,
and the workspace's own files. Spelled here once (`python -m pipeline.layering` refuses a second
spelling anywhere in pipeline/ or flows/); each stage's folder comes from params.yaml (`paths.*`),
so a path is `root / params.paths.<folder> / <name>`. dvc.yaml spells the same names in its outs
and metrics (YAML cannot import them): tests/unit/test_stages.py checks that the two agree.

A leaf module with no imports, deliberately: every stage that writes or reads one of these files
imports it, so it is a code dep of those stages in dvc.yaml, and an edit here re-runs them.
"""

from __future__ import annotations

# The workspace: params, DVC's DAG and its record, the raw pool's DVC file (paths.pool is `data`).
PARAMS = "params.yaml"
DVC_YAML = "dvc.yaml"
DVC_LOCK = "dvc.lock"
POOL_DVC = "data.dvc"

# Every stage
METRICS = "metrics.json"  # a stage's headline numbers (prior, train, evaluate); DVC metrics
LOG = "log.csv"  # a training stage's curve, one row per logged step (prior, train); DVC plots
REPORT = "report.png"  # the picture a person looks at (curate, evaluate)
MANIFEST = "manifest.csv"  # one row per image (pool, each suite) or per patch (curated)
CHECKPOINT = "checkpoint.pt"  # a training stage's resume state, deleted when the stage finishes (prior, train)

# ingest ({pool}/)
REJECTED = "rejected.csv"
# curate ({curated}/)
PHOTOS = "photos.csv"
REMOVED = "removed.csv"
CHECKS = "checks.json"
SUMMARY = "summary.json"  # DVC metrics
PATCHES_TRAIN = "patches_train.npy"
PATCHES_VAL = "patches_val.npy"
PATCHES_PRIOR = "patches_prior.npy"
# synthesize ({suites}/)
GALLERY = "gallery.png"
# prior ({prior}/)
PRIOR = "prior.pt"  # the content prior's checkpoint
RECON = "recon.png"
# train ({model}/)
MODEL = "model.pt"  # the deraining network's checkpoint
# evaluate ({evaluation}/)
PER_IMAGE = "per_image.csv"
FULLSIZE = "fullsize.png"
# register ({registry}/)
DECISION = "decision.json"

# A user's pretrained autoencoder directory (diffusers layout): prior.model.path
AUTOENCODER_CONFIG = "config.json"

# The study (build/study/)
STUDY_CELLS = "cells.csv"
STUDY_CURVES = "curves.csv"
STUDY_TABLE = "table.csv"
STUDY_EFFECTS = "effects.csv"
STUDY_CLAIMS = "claims.csv"
STUDY_HEATMAPS = "heatmaps.png"
STUDY_TRADEOFF = "tradeoff.png"
STUDY_RECOMMENDATION = "recommendation.md"
STUDY_SUGGESTED_PARAMS = "suggested_params.yaml"
STUDY_RECOMMENDATION_JSON = "recommendation.json"  # what `raincheck study apply` reads
STUDY_OUTPUTS = (STUDY_CELLS, STUDY_TABLE, STUDY_CURVES, STUDY_EFFECTS, STUDY_CLAIMS, STUDY_HEATMAPS, STUDY_TRADEOFF,
                 STUDY_RECOMMENDATION, STUDY_SUGGESTED_PARAMS, STUDY_RECOMMENDATION_JSON)  # logged to the study's MLflow run, in this order
