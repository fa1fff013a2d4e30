"""Curation: measure, dedupe, split and select the background patches, then gate them.

pool (reading the pool) · complexity (measures) · dedupe (perceptual hashes) · split (by photo) ·
patches (grid, crops) · selection (N under a policy) · checks (Great Expectations) ·
patch_files (writing the patch arrays and eval crops) · report (report.png) ·
curate (the entry, `run_curate`).
"""
