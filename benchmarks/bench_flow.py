"""Orchestration overhead: the Prefect retraining flow against the same `dvc repro` run alone.

    python benchmarks/bench_flow.py             # tiny profile, 3 rounds (about 6 minutes on 2 cores)
    python benchmarks/bench_flow.py --quick     # tiny profile, 1 round
    python benchmarks/bench_flow.py --full      # tiny, then the default profile (params.yaml) once
                                                # (two full runs: about 12 minutes more)
    python benchmarks/bench_flow.py --rounds 0 --default-rounds 2   # the default profile only, twice
    python benchmarks/bench_flow.py --rounds 0 --served 2   # the scheduled path: `flows serve` + triggered runs
    python benchmarks/bench_flow.py --json FILE # also keep the numbers

Per profile, in a throwaway workspace (a git repository with a copy of the project code, the
profile as params.yaml, a local DVC remote, and the pool: tiny photos made here for the tiny
profile; a copy of the project's own pool for the default one, ingested if there is none), every
command in a fresh process with the environment `python -m flows retrain` gives itself
(pipeline.runtime.project_environment):

- `dvc repro --force`: every stage, none restored from DVC's run cache (a forced stage skips it);
- `python -m flows retrain --force`: the same stages, one Prefect task each (`dvc repro --force
  --single-item <stage>`), plus the flow's own work: a temporary Prefect server, `dvc add` of the
  pool, MLflow registration and gate, `dvc push`;
- then, nothing changed: `python -m flows retrain` (DVC skips every stage), on the tiny profile the
  same with --refresh-pool as the scheduled deployment runs it (schedule.refresh_pool), and
  `dvc repro` alone.

Overhead = flow - repro. Where the flow's time goes: its start-up, split at the log lines that
announce the temporary server and the flow run (interpreter and imports | server start), each
task's duration from the flow's own Prefect database (.raincheck/prefect/prefect.db), the flow
run minus its tasks (Prefect between tasks, artifacts), and the end (summary, server stop). The
tiny profile runs in rounds that alternate which command goes first, to show the noise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.runtime import STATE_DIR, project_environment, state_path  # noqa: E402
from pipeline.stages import DVC_STAGES as STAGES  # noqa: E402
from tests.workspaces import child_env, copy_project  # noqa: E402  (no pytest: plain helpers)

PROFILES = {"tiny": ROOT / "profiles" / "tiny.yaml", "default": ROOT / "params.yaml"}
TASKS = ("ingest", *STAGES, "register", "push", "commit-results")
PARTS = ("start: interpreter, imports", "start: temporary server", "outside the flow run", "ingest", *STAGES,
         "stage tasks, sum", "register", "push", "commit-results", "between tasks", "end: summary, server stop")


def write_photos(folder: Path, count: int, seed: int, size: tuple[int, int] = (150, 180)) -> None:
    """`count` distinct synthetic photos: PNG, uint8 HxWx3, waves of random frequency and phase per
    channel over a gradient, plus noise of random strength (enough texture for curation)."""
    from PIL import Image

    from pipeline.seeds import numpy_rng

    folder.mkdir(parents=True, exist_ok=True)
    rng = numpy_rng(seed, "bench_flow", "photos")
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(count):
        frequency = rng.uniform(0.02, 0.25, size=3)
        phase = rng.uniform(0, 2 * np.pi, size=3)
        waves = np.stack([np.sin(f * (xx + (c + 1) * yy / 3) + p) for c, (f, p) in enumerate(zip(frequency, phase))], axis=-1)
        image = 0.35 + 0.25 * waves + 0.3 * (xx / width)[..., None] + rng.uniform(0, 0.4) * rng.random((height, width, 1))
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(folder / f"bench_{i:02d}.png")


def run(command: list[str], workspace: Path, env: dict) -> str:
    """Run a setup command; fail with its output."""
    result = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed in {workspace}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def build_workspace(base: Path, profile: str) -> tuple[Path, dict]:
    """A committed git + DVC workspace with the profile as params.yaml and its pool in place.

    Returns (workspace, child environment). The pool is ingested (tiny: from photos made here) or
    copied from the project (default), then `dvc add`-ed, so no timed command has to build it.
    """
    from pipeline.config import load_params, read_params
    from pipeline.workspace import prepare_workspace

    workspace = base / "ws"
    workspace.mkdir(parents=True)
    copy_project(workspace)
    params = read_params(PROFILES[profile])  # the tiny profile is an overlay on cpu.yaml
    if profile == "tiny":
        write_photos(base / "photos", 10, params["seed"])
        params["ingest"]["sources"] = [{"type": "folder", "path": str(base / "photos"), "licence": "benchmark images"}]
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (workspace / ".gitignore").write_text(f"/{params['paths']['pool']}\n{STATE_DIR}/\n__pycache__/\n/{params['paths']['registry']}/\n")
    env = child_env(workspace)
    run(["git", "init", "-q", "-b", "main"], workspace, env)
    prepare_workspace(workspace)  # dvc init, as `python -m flows retrain` would
    run([sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(base / "remote")], workspace, env)
    pool = load_params(workspace / "params.yaml").paths.pool
    project_pool = ROOT / pool
    if profile == "default" and (project_pool / "manifest.csv").is_file():
        shutil.copytree(project_pool, workspace / pool)
    else:
        print(f"[bench_flow] ingesting the {profile} pool", file=sys.stderr)
        run([sys.executable, "-m", "pipeline", "ingest"], workspace, project_environment(workspace, dict(env)))
    run([sys.executable, "-m", "dvc", "add", "--quiet", pool], workspace, env)
    run(["git", "add", "-A"], workspace, env)
    run(["git", "commit", "-q", "-m", "benchmark workspace"], workspace, env)
    return workspace, env


# Log lines that mark the flow process's start-up, and the time it is at when they appear.
MARKERS = {"server_started": "Starting temporary server", "flow_began": "Beginning flow run"}


def timed(name: str, command: list[str], workspace: Path, env: dict) -> dict:
    """Wall time of one command in a fresh process, when the MARKERS lines appeared (s after the
    start), and how many stages DVC ran in it. Output unbuffered, as `make run` has it."""
    print(f"[bench_flow] {name}: {' '.join(command[2:])}", file=sys.stderr, flush=True)
    began = time.perf_counter()
    process = subprocess.Popen(command, cwd=workspace, env={**env, "PYTHONUNBUFFERED": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, marks = [], {}
    for line in process.stdout:
        lines.append(line)
        for key, text in MARKERS.items():
            if key not in marks and text in line:
                marks[key] = time.perf_counter() - began
    code = process.wait()
    seconds = time.perf_counter() - began
    output = "".join(lines)
    if code != 0:
        raise RuntimeError(f"{name} failed (exit {code}):\n{output[-4000:]}")
    return {"name": name, "seconds": seconds, "marks": marks, "stages_run": output.count("Running stage '")}


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def flow_breakdown(workspace: Path, run: dict) -> dict:
    """Seconds per part of the latest flow run: the start-up and the end of the process (from the
    MARKERS times), each task (from the Prefect database of the workspace), and `between tasks`:
    the flow run minus its tasks (Prefect's own bookkeeping, the result artifacts)."""
    database = state_path(workspace, "prefect", "prefect.db")
    with sqlite3.connect(database) as connection:
        flow_id, start, end = connection.execute(
            "SELECT id, start_time, end_time FROM flow_run WHERE start_time IS NOT NULL ORDER BY start_time DESC LIMIT 1").fetchone()
        tasks = connection.execute("SELECT name, start_time, end_time FROM task_run WHERE flow_run_id = ?", (flow_id,)).fetchall()
    flow_seconds = (_time(end) - _time(start)).total_seconds()
    marks = run["marks"]
    if len(marks) == len(MARKERS):
        parts = {"start: interpreter, imports": marks["server_started"],
                 "start: temporary server": marks["flow_began"] - marks["server_started"],
                 "end: summary, server stop": run["seconds"] - marks["flow_began"] - flow_seconds}
    else:  # the log lines changed: keep the total outside the flow run
        parts = {"outside the flow run": run["seconds"] - flow_seconds}
    for name, task_start, task_end in tasks:
        task = name.rsplit("-", 1)[0]  # Prefect names task runs "<task>-<suffix>"
        parts[task] = parts.get(task, 0.0) + (_time(task_end) - _time(task_start)).total_seconds()
    parts["stage tasks, sum"] = sum(parts.get(stage, 0.0) for stage in STAGES)
    parts["between tasks"] = flow_seconds - sum(seconds for key, seconds in parts.items() if key in TASKS)
    return parts


def alternating_rounds(rounds: int, run_repro, run_flow) -> list[dict]:
    """`rounds` pairs of (repro, flow) timings (each a dict with "seconds"), alternating which runs
    first, with the flow's overhead over the repro in seconds and as a fraction."""
    pairs = []
    for index in range(rounds):
        order = ("repro", "flow") if index % 2 == 0 else ("flow", "repro")
        pair = {what: (run_repro if what == "repro" else run_flow)() for what in order}
        pair["first"] = order[0]
        pair["overhead_s"] = pair["flow"]["seconds"] - pair["repro"]["seconds"]
        pair["overhead_fraction"] = pair["overhead_s"] / pair["repro"]["seconds"]
        pairs.append(pair)
    return pairs


def measure(profile: str, rounds: int, base: Path) -> dict:
    """Rounds of (repro --force, flow --force), alternating which goes first, then the no-change runs."""
    workspace, env = build_workspace(base / profile, profile)
    repro_env = project_environment(workspace, dict(env))  # what the flow's processes see
    flow = [sys.executable, "-m", "flows", "retrain", "--root", str(workspace)]
    repro = [sys.executable, "-m", "dvc", "repro", "--force"]
    def forced_flow() -> dict:
        row = timed("flow --force", [*flow, "--force"], workspace, env)
        row["parts"] = flow_breakdown(workspace, row)
        return row

    results: dict = {"profile": profile, "rounds": alternating_rounds(
        rounds, lambda: timed("dvc repro --force", repro, workspace, repro_env), forced_flow)}
    no_change = {"flow, no change": flow}
    if profile == "tiny":  # the scheduled deployment re-ingests first (schedule.refresh_pool)
        no_change["flow, no change, --refresh-pool"] = [*flow, "--refresh-pool"]
    results["no_change"] = []
    for name, command in no_change.items():
        row = timed(name, command, workspace, env)
        row["parts"] = flow_breakdown(workspace, row)
        results["no_change"].append(row)
    results["no_change"].append(timed("dvc repro, no change", repro[:-1], workspace, repro_env))
    return results


TRIGGER = """
import json, sys, time
from prefect.deployments import run_deployment
began = time.perf_counter()
run = run_deployment("retrain/scheduled-retrain", parameters=json.loads(sys.argv[1]), timeout=3600)
print(json.dumps({"seconds": time.perf_counter() - began, "state": run.state.type.value}))
"""


def measure_served(profile: str, rounds: int, base: Path) -> dict:
    """The scheduled path: `python -m flows serve` (a Prefect server on loopback and the serving
    process), then rounds of (repro --force, a triggered deployment run with force=True and no pool
    refresh), alternating which goes first. A triggered run's time is measured around
    `run_deployment` (from the trigger to the run's final state), so it includes the serving
    process starting the flow run but neither server start-up nor the trigger's own imports."""
    workspace, env = build_workspace(base / f"{profile}-served", profile)
    repro_env = project_environment(workspace, dict(env))
    port = 4300 + os.getpid() % 500
    run([sys.executable, "-m", "flows", "serve", "--root", str(workspace), "--port", str(port)], workspace, env)
    api_env = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    repro = [sys.executable, "-m", "dvc", "repro", "--force"]
    def triggered(name: str, parameters: dict, stages: int) -> dict:
        print(f"[bench_flow] triggered deployment run, {name}", file=sys.stderr, flush=True)
        out = json.loads(run([sys.executable, "-c", TRIGGER, json.dumps(parameters)], workspace, api_env).strip().splitlines()[-1])
        if out["state"] != "COMPLETED":
            raise RuntimeError(f"the triggered run ended {out['state']}")
        return {"name": f"triggered run, {name}", "seconds": out["seconds"], "stages_run": stages}

    results: dict = {"profile": f"{profile}, served"}
    try:
        results["rounds"] = alternating_rounds(
            rounds, lambda: timed("dvc repro --force", repro, workspace, repro_env),
            lambda: triggered("forced", {"force": True, "refresh_pool_first": False}, len(STAGES)))
        results["no_change"] = [triggered("no change", {"refresh_pool_first": False}, 0)]
    finally:
        run([sys.executable, "-m", "flows", "stop", "--root", str(workspace)], workspace, env)
    return results


def print_report(results: list[dict]) -> None:
    print("| profile | round (first) | dvc repro --force s | flow --force s | overhead s | overhead % | stages run (repro, flow) |")
    print("|---|---|---|---|---|---|---|")
    for result in results:
        for index, pair in enumerate(result["rounds"], 1):
            print(f"| {result['profile']} | {index} ({pair['first']}) | {pair['repro']['seconds']:.1f} | {pair['flow']['seconds']:.1f} | "
                  f"{pair['overhead_s']:+.1f} | {100 * pair['overhead_fraction']:+.1f}% | "
                  f"{pair['repro']['stages_run']}, {pair['flow']['stages_run']} |")
        if len(result["rounds"]) > 1:
            overheads = [pair["overhead_s"] for pair in result["rounds"]]
            fractions = [pair["overhead_fraction"] for pair in result["rounds"]]
            print(f"| {result['profile']} | median | {statistics.median(p['repro']['seconds'] for p in result['rounds']):.1f} | "
                  f"{statistics.median(p['flow']['seconds'] for p in result['rounds']):.1f} | {statistics.median(overheads):+.1f} | "
                  f"{100 * statistics.median(fractions):+.1f}% | |")

    print("\nNothing changed (every stage skipped):\n")
    print("| profile | run | total s | stages run |")
    print("|---|---|---|---|")
    for result in results:
        for row in result["no_change"]:
            print(f"| {result['profile']} | {row['name']} | {row['seconds']:.1f} | {row['stages_run']} |")

    if not any("parts" in row for r in results for row in [*(p["flow"] for p in r["rounds"]), *r["no_change"]]):
        return  # triggered runs only: their parts live in the serving process's run record
    print("\nWhere a flow's time goes (s; from the Prefect run record):\n")
    runs = [(f"{r['profile']} forced {i}", pair["flow"]) for r in results for i, pair in enumerate(r["rounds"], 1) if "parts" in pair["flow"]]
    runs += [(f"{r['profile']} {row['name'].removeprefix('flow, ')}", row) for r in results for row in r["no_change"] if "parts" in row]
    print("| part | " + " | ".join(label for label, _ in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for part in PARTS:
        if any(part in row["parts"] for _, row in runs):
            print(f"| {part} | " + " | ".join(f"{row['parts'].get(part, 0.0):.1f}" for _, row in runs) + " |")
    print("| total | " + " | ".join(f"{row['seconds']:.1f}" for _, row in runs) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny profile, one round")
    parser.add_argument("--full", action="store_true", help="also the default profile (params.yaml), one round")
    parser.add_argument("--default-rounds", type=int, default=None,
                        help="rounds on the default profile (default: 1 with --full, else 0); 0 tiny rounds with --rounds 0")
    parser.add_argument("--rounds", type=int, default=None, help="rounds on the tiny profile (default: 3, --quick: 1)")
    parser.add_argument("--served", type=int, default=0, metavar="ROUNDS",
                        help="also the scheduled path on the default profile: `flows serve`, then ROUNDS triggered runs")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway workspaces (their path is printed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)

    base = Path(tempfile.mkdtemp(prefix="raincheck-bench-flow-"))
    load_before = os.getloadavg()[0]
    try:
        default_rounds = args.default_rounds if args.default_rounds is not None else (1 if args.full else 0)
        results = [measure("tiny", rounds, base)] if rounds else []
        if default_rounds:
            results.append(measure("default", default_rounds, base))
        if args.served:
            results.append(measure_served("default", args.served, base))
    finally:
        if args.keep:
            print(f"[bench_flow] workspaces kept in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    load_after = os.getloadavg()[0]
    print_report(results)
    print(f"\nload average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} cores")
    if args.json:
        args.json.write_text(json.dumps({"load": [load_before, load_after], "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
