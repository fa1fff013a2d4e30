"""Ingestion: the raw background pool of real photographs.

- `sources`: where photos come from, one configured source -> its `package` records:
  `pypi` (photos inside wheels), `debian` (photos inside .deb packages, their licences from the
  copyright file), `folders` (the user's own); `archives`: path-safe tar extraction and the JPEG
  inside an EET container.
- `decode`: one file's bytes -> uint8 RGB, scaled down once; odd and broken files get a reason.
- `ingest`: the step's entry, `run_ingest(params, root)`, writing `{pool}/` (docs/dataflow.md).
"""
