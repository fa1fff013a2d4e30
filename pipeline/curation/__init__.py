"""Curation: measure, dedupe, split and select the background patches, then gate them.

complexity (measures) · dedupe (perceptual hashes) · split (by photo) · patches (grid, crops) ·
selection (N under a policy) · checks (Great Expectations) · report (report.png) ·
curate (the entry, `run_curate`).
"""
