"""`python -m flows <command>`: run and schedule raincheck's Prefect flows.

The environment (telemetry off, project-local Prefect/MLflow homes) is set before Prefect is
imported, because Prefect reads its settings at import time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import layout


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flows", description="raincheck's Prefect flows")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=Path("."), help="workspace: a git repository with dvc.yaml (default: .)")
    common.add_argument("--params", default=layout.PARAMS, help="params file inside the workspace (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    retrain = sub.add_parser("retrain", parents=[common], help="the whole pipeline once: pool, DVC stages, registration, push")
    retrain.add_argument("--refresh-pool", action="store_true", help="re-ingest the pool even if data/ exists")
    retrain.add_argument("--force", action="store_true", help="re-run every DVC stage even if nothing changed (`dvc repro --force` per stage, no run cache)")
    serve = sub.add_parser("serve", parents=[common], help="start a Prefect server on 127.0.0.1 (unless PREFECT_API_URL is set) and serve the scheduled deployments in the background")
    serve.add_argument("--port", type=int, default=4200, help="Prefect server port (default: %(default)s)")
    sub.add_parser("serve-foreground", parents=[common], help="serve the deployments in this process (blocks)")
    sub.add_parser("stop", parents=[common], help="stop what `serve` started")
    sub.add_parser("study", parents=[common], help="the generalization study: the grid in params `study:` (e.g. --params profiles/study-quick.yaml)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from pipeline.runtime import project_environment, state_path

    root = args.root.resolve()
    project_environment(root)
    if args.command == "retrain":
        from flows.retrain import main as retrain_main

        return retrain_main(root, args.params, args.refresh_pool, args.force)
    if args.command == "serve":
        from flows.deployments import RETRAIN_DEPLOYMENT
        from flows.server import ServeError, serve_in_background
        from pipeline.config import ParamsError, load_params

        try:
            load_params(root / args.params)  # a bad schedule is named here, before anything starts
            api_url, pid = serve_in_background(root, args.params, args.port, f"retrain/{RETRAIN_DEPLOYMENT}")
        except ParamsError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except ServeError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        ui = api_url[: -len("/api")] if api_url.endswith("/api") else api_url
        print(f"[raincheck] Prefect server: {ui}  (UI: open it in a browser; API: {api_url})")
        print(f"[raincheck] serving deployment 'retrain/{RETRAIN_DEPLOYMENT}' (pid {pid}, alive); logs: {state_path(root, 'serve.log')}")
        print(f"[raincheck] run now: PREFECT_API_URL={api_url} prefect deployment run retrain/{RETRAIN_DEPLOYMENT}")
        print("[raincheck] stop with: make stop")
        return 0
    if args.command == "serve-foreground":
        from flows.deployments import serve_forever

        serve_forever(root, args.params)
        return 0
    if args.command == "study":
        from flows.study import main as study_main

        return study_main(root, args.params)
    if args.command == "stop":
        from flows.server import stop

        stopped = stop(root)
        print("[raincheck] stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
