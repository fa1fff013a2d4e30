"""Ingestion: the raw background pool of real photographs.

- `sources`: where photos come from (PyPI wheels, Debian packages, the user's folders), which
  files inside a package are photos, their licences, path-safe extraction.
- `decode`: one file's bytes -> uint8 RGB, scaled down once; odd and broken files get a reason.
- `ingest`: the step's entry, `run_ingest(params, root)`, writing `{pool}/` (docs/dataflow.md).
"""
