"""`python -m flows <command>`: run raincheck's Prefect flows.

The environment (telemetry off, project-local Prefect/MLflow homes) is set before Prefect is
imported, because Prefect reads its settings at import time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows", description="raincheck's Prefect flows")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    retrain = sub.add_parser("retrain", help="the whole pipeline once: pool, DVC stages, registration, push")
    retrain.add_argument("--root", type=Path, default=Path("."), help="workspace: a git repository with dvc.yaml (default: .)")
    retrain.add_argument("--params", default="params.yaml", help="params file inside the workspace (default: %(default)s)")
    retrain.add_argument("--refresh-pool", action="store_true", help="re-ingest the pool even if data/ exists")
    args = parser.parse_args(argv)

    from pipeline.runtime import project_environment

    root = args.root.resolve()
    project_environment(root)
    if args.command == "retrain":
        from flows.retrain import main as retrain_main

        return retrain_main(root, args.params, args.refresh_pool)
    return 2


if __name__ == "__main__":
    sys.exit(main())
