"""`raincheck` / `python -m pipeline`: one subcommand per step, plus registry and prediction.

Steps take no hyperparameter flags: everything that changes a result comes from params.yaml
(override with `dvc exp run -S key=value`). Heavy imports happen inside each command so that
`--help` answers instantly.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

# One subcommand per stage of pipeline/stages.py (light: no third-party imports, so `--help` stays
# instant). The same names are the params sections, the DVC stages and the Prefect tasks.
from pipeline import layout
from pipeline.stages import BY_NAME, STAGES


def run_step(step: str, params_path: Path, root: Path) -> dict:
    """Load params and run one step's entry function under the workspace lock; returns its summary.

    The lock (pipeline.workspace.workspace_lock) keeps a hand-run step from working beside a
    flow's stage on the same files (checkpoint.pt); inside a flow the flow already holds it."""
    from pipeline.config import load_params
    from pipeline.runtime import project_environment
    from pipeline.workspace import workspace_lock

    project_environment(root)
    params = load_params(params_path)
    stage = BY_NAME[step]
    entry = getattr(importlib.import_module(stage.module), stage.function)
    if int(os.environ.get("RANK", "0")) > 0:  # torchrun's other ranks: part of rank 0's locked run
        return entry(params, root)
    with workspace_lock(root):
        return entry(params, root)


def _cmd_step(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    summary = run_step(args.command, args.params, args.root)
    print(f"[raincheck] {args.command} done in {time.perf_counter() - start:.1f} s")
    print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    from pipeline.config import load_params
    from pipeline.registry.register import run_register
    from pipeline.runtime import project_environment
    from pipeline.workspace import workspace_lock

    project_environment(args.root)
    params = load_params(args.params)
    # A registration takes seconds: a second one (or one started beside a flow's last step) waits
    # for the first and then finds its version ("reproduced") instead of failing.
    with workspace_lock(args.root, timeout=args.wait):
        result = run_register(params, args.root, flow_run_id=args.flow_run_id)
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return 0


def _cmd_registry(args: argparse.Namespace) -> int:
    from pipeline.config import load_params
    from pipeline.registry import commands
    from pipeline.runtime import project_environment

    project_environment(args.root)
    params = load_params(args.params)
    if args.action == "show":
        print(commands.show(params))
    elif args.action == "history":
        print(commands.show_history(params))
    elif args.action == "promote":
        print(commands.promote(params, args.version, reason=args.reason, root=args.root))
    elif args.action == "rollback":
        print(commands.rollback(params, reason=args.reason, root=args.root))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from pipeline.config import load_params
    from pipeline.runtime import project_environment
    from pipeline.serving.predict import predict_paths

    project_environment(args.root)
    params = load_params(args.params)
    written, failures = predict_paths(params, args.input, args.output, version=args.version, tile=args.tile,
                                      checkpoint=args.checkpoint)
    for path, reason in failures:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"[raincheck] wrote {len(written)} derained image(s) to {args.output}")
    if failures:
        # Non-zero only when something was skipped, so scripts notice; the others are written.
        print(f"error: {len(failures)} input(s) skipped: {', '.join(str(p) for p, _ in failures)}", file=sys.stderr)
        return 1
    return 0


def _cmd_serve_model(args: argparse.Namespace) -> int:
    """`mlflow models serve` of a registered version, with this interpreter's bin folder first on
    PATH: MLflow starts the server as `exec uvicorn`, which a venv not on PATH lacks (exit 127)."""
    from pipeline.config import load_params
    from pipeline.tracking import mlflow_client, resolve_version
    from pipeline.runtime import project_environment
    from pipeline.serving.predict import model_uri

    env = project_environment(args.root)  # MLFLOW_TRACKING_URI: the workspace's registry
    params = load_params(args.params)
    resolve_version(mlflow_client(), params.register.model_name, args.version)  # a wrong version: one line, before a server
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    command = [os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", model_uri(params, args.version),
               "--env-manager", "local", "--host", args.host, "--port", str(args.port)]
    print(f"[raincheck] serving {command[4]} on http://{args.host}:{args.port}/invocations", flush=True)
    os.execve(command[0], command, dict(env))  # the server replaces this process: signals reach it
    return 0  # not reached


def _cmd_profile(args: argparse.Namespace) -> int:
    from pipeline.profiles import ProfileError, install_profile

    try:
        lines = install_profile(args.root, args.name)
    except ProfileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def _cmd_study_apply(args: argparse.Namespace) -> int:
    from pipeline.profiles import ProfileError
    from pipeline.study_apply import StudyApplyError, apply_recommendation
    from pipeline.study_report import OUTPUT

    folder = args.source or args.root / OUTPUT
    try:
        lines = apply_recommendation(args.params, folder, dry_run=args.dry_run)
    except (StudyApplyError, ProfileError) as error:  # nothing recommended, no report, a backup in the way
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def _cmd_plots(args: argparse.Namespace) -> int:
    from pipeline.plots import PlotsError, render
    from pipeline.runtime import project_environment

    project_environment(args.root)
    out = args.out if args.out.is_absolute() else args.root / args.out
    try:
        written = render(args.root, out)
    except PlotsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    pages = " or ".join(sorted(str(path) for path in written if path.suffix == ".html"))
    print(f"[raincheck] {sum(path.suffix == '.png' for path in written)} plot(s) in {out}; open {pages} "
          "(offline: images, or charts drawn by the vega-bundle.js beside them; no CDN)")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("raincheck")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raincheck",
        description="Deraining models that generalize to unseen rain: curate, synthesize, train, "
        "evaluate, register. Settings live in params.yaml; the whole pipeline runs with "
        "`make run` (Prefect) or `dvc repro`.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", type=Path, default=Path(layout.PARAMS), help="params file (default: %(default)s)")
    common.add_argument("--root", type=Path, default=Path("."), help="workspace root (default: current directory)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for stage in STAGES:
        step_parser = sub.add_parser(stage.name, parents=[common], help=stage.help, description=stage.help)
        step_parser.set_defaults(handler=_cmd_step)
    _add_model_commands(sub, common)
    _add_workspace_commands(sub, common)
    return parser


def _add_model_commands(sub, common: argparse.ArgumentParser) -> None:
    """register, registry, predict, serve-model: the trained model's way to users."""
    text = "log the evaluated model to MLflow, register it and apply the promotion gate"
    reg = sub.add_parser("register", parents=[common], help=text, description=text + " (resumable; identity is the weights' sha256)")
    reg.add_argument("--flow-run-id", default=None, help="Prefect flow run id to record in the lineage tags")
    reg.add_argument("--wait", type=float, default=120, metavar="SECONDS",
                     help="wait this long for another run or registration in this workspace to finish (default 120; 0 = refuse at once)")
    reg.set_defaults(handler=_cmd_register)

    text = "show the model registry and the champion history, promote a version by hand, roll back"
    registry = sub.add_parser("registry", parents=[common], help=text, description=text + " (promote and rollback need --reason)")
    registry.add_argument("action", choices=["show", "history", "promote", "rollback"])
    registry.add_argument("version", nargs="?", help="version to promote (with `promote`)")
    registry.add_argument("--reason", default="", help="why (recorded on the version)")
    registry.set_defaults(handler=_cmd_registry)

    text = "derain an image file or a folder with the champion (or --version, or --checkpoint)"
    predict = sub.add_parser("predict", parents=[common], help=text,
                             description=text + "; through the served model's code (the same images as `serve-model`)")
    predict.add_argument("input", type=Path, help="image file or folder of images")
    predict.add_argument("output", type=Path, help="output file (for one image) or folder")
    which = predict.add_mutually_exclusive_group()
    which.add_argument("--version", default=None, help="registered version or alias (default: champion)")
    which.add_argument("--checkpoint", type=Path, default=None,
                       help="a local model.pt instead of a registered version (e.g. build/model/model.pt)")
    predict.add_argument("--tile", type=int, default=None, help="tile edge for large images (default: evaluate.tile of the params)")
    predict.set_defaults(handler=_cmd_predict)

    text = "serve a registered model over HTTP (`mlflow models serve`, the venv's bin on PATH)"
    serve = sub.add_parser("serve-model", parents=[common], help=text, description=text + "; POST base64 images to /invocations")
    serve.add_argument("--version", default=None, help="registered version or alias (default: champion)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    serve.add_argument("--port", type=int, default=5001, help="port (default: %(default)s)")
    serve.set_defaults(handler=_cmd_serve_model)


def _add_workspace_commands(sub, common: argparse.ArgumentParser) -> None:
    """profile, study apply, plots: what changes or shows the workspace around the steps."""
    text = "write profiles/NAME.yaml (an overlay: merged onto its base) into params.yaml and print the diff"
    profile = sub.add_parser("profile", parents=[common], help=text, description=text)
    profile.add_argument("name")
    profile.set_defaults(handler=_cmd_profile)

    text = "write the study's recommended composition (build/study/recommendation.json) into params.yaml"
    study = sub.add_parser("study", help="the generalization study's results (`make study` runs it)",
                           description="the generalization study's results; the study itself runs with `make study`")
    apply = study.add_subparsers(dest="study_command", required=True, metavar="ACTION").add_parser(
        "apply", parents=[common], help=text, description=text + ": shows the diff, keeps params.yaml.bak, validates first")
    apply.add_argument("--from", dest="source", type=Path, default=None, metavar="DIR",
                       help="the study's output folder (default: build/study under --root)")
    apply.add_argument("--dry-run", action="store_true", help="print the diff only; write nothing")
    apply.set_defaults(handler=_cmd_study_apply)

    text = "render the dvc.yaml plots to PNG files, index.html and interactive.html that open offline (no CDN)"
    plots = sub.add_parser("plots", parents=[common], help=text, description=text + "; `dvc plots show` needs network for vega")
    plots.add_argument("--out", type=Path, default=Path("build/plots"), help="output folder, under --root when relative (default: %(default)s)")
    plots.set_defaults(handler=_cmd_plots)


def main(argv: list[str] | None = None) -> int:
    from pipeline.runtime import fast_allocation, pin_cpu_dispatch

    fast_allocation()  # before torch's first allocation (DVC stages call this CLI directly)
    pin_cpu_dispatch()  # before torch's first kernel
    args = build_parser().parse_args(argv)
    if getattr(args, "action", None) == "promote" and not args.version:
        print("error: `raincheck registry promote` needs a VERSION", file=sys.stderr)
        return 2
    root = getattr(args, "root", None)
    if root is not None and not Path(root).is_dir():
        print(f"error: --root {root} is not a directory (give the workspace: the folder with params.yaml)", file=sys.stderr)
        return 2
    from pipeline.config import ParamsError
    from pipeline.workspace import WorkspaceError

    try:
        return args.handler(args)
    except ParamsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except WorkspaceError as error:  # e.g. the run lock is held: one line, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        if not _expected(error):
            raise  # bugs keep their traceback
        # Data, input and registry problems are reported plainly, on one line.
        print(f"error: {str(error).splitlines()[0] if str(error) else type(error).__name__}", file=sys.stderr)
        return 1


def _expected(error: Exception) -> bool:
    """Errors a user causes (paths, inputs, registry state), as opposed to bugs."""
    from mlflow.exceptions import MlflowException  # a project dependency; imported on the error path only

    from pipeline.tracking import RegistryError

    return isinstance(error, (FileNotFoundError, ValueError, RegistryError, MlflowException))


if __name__ == "__main__":
    sys.exit(main())
