"""The fidelity ablation: which mechanism keeps the background while removing unseen rain.

Every arm trains with the same recipe and budget (train section of params.yaml, with its model
swapped) on the workspace's curated patches and prior, then is scored on every suite of
`evaluate.suites` with the evaluate step's own code. Arms:

- `classical_median`: no learning, bright outliers of a 7x7 median replaced by it;
- `resnet`: the plain residual baseline (32 channels x 4 blocks);
- `prior_resnet`: every pixel drawn by the frozen prior's decoder (the previous default);
- `fused_prior`, and the same weights at fidelity 0.5: CodeFormer-style fusion;
- `masked_prior`: JORDER-style rain mask, out = (1 - m) x + m prior(x);
- `masked_fused`: the mask composition with the fused branch;
- `masked_subtract`: the mask composition whose re-drawing subtracts the estimated rain light where
  the content shows through and uses the prior only where the rain hid it;
- `masked_prior_streak_<12|16|24>`: the streak gate trained in, by width of the mask head, with
  the 11-px bright gate; `@coarse` adds the inference-only half-size mask pass, `@no_streak` turns
  the gate off at inference, `masked_prior_gated@streak` turns it on for weights trained without it;
- `masked_prior_streak_16_gate<21|31>`: the 16-channel head with a wider bright-gate window (the
  top-hat then also passes wider streaks; 21 is the default), `@coarse` as above;
- `masked_prior_streak_16_gate21_<subtract|darken>`: the default's arm with the other two
  compositions (the re-drawing replaced by the input minus an estimated rain light, or only
  allowed to darken);
- `masked_prior_streak_16_gate21@shower<35|40|45|50>`: the default's arm with the shower check at
  inference (an image whose mask covers the frame less evenly than 0.35 ... 0.50 comes back
  untouched; 45 is the default).

`<arm>@<setting>` evaluates the weights trained for `<arm>` (in the same invocation) with a model
attribute changed (INFERENCE_SETTINGS). The arms before the streak gate pin its earlier defaults
(12-channel head, no streak gate); every arm trains with params.yaml's `train` section, whose lr
became 2e-3 with the streak gate and its iterations 2000 after it (the README's rows say which lr
and budget each was measured at; `--iterations 1500` regenerates the earlier 1,500-step rows).

It needs the workspace's build/curated, build/prior and build/suites (after `make run`, or
`make repro ARGS=synthesize` and `make repro ARGS=prior`). Writes benchmarks/results/ablation.json
and prints a Markdown table (also written to benchmarks/results/ablation.md).

    python benchmarks/ablation.py [--params params.yaml] [--iterations N] [--arms resnet,masked_prior]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The code defaults are now 16, 0.4 and 0.45; the shower check came after every trained arm here
BEFORE_STREAKS = {"mask_channels": 12, "streak_gate": 0, "shower_check": 0}
STREAK = {"type": "masked_prior", "blocks": 2, "bright_gate": 11, "streak_gate": 0.4, "shower_check": 0}
ARMS = {
    "classical_median": {"type": "classical_median"},
    "resnet": {"type": "resnet", "channels": 32, "blocks": 4},
    "prior_resnet": {"type": "prior_resnet", "blocks": 2},
    "fused_prior": {"type": "fused_prior", "blocks": 2},
    # The arms before the streak gate: 12-channel head, no streak gate (bright_gate 0: ungated)
    "masked_prior": {"type": "masked_prior", "blocks": 2, "bright_gate": 0, **BEFORE_STREAKS},
    "masked_fused": {"type": "masked_fused", "blocks": 2, "bright_gate": 0, **BEFORE_STREAKS},
    "masked_subtract": {"type": "masked_prior", "blocks": 2, "composition": "subtract", "bright_gate": 0, **BEFORE_STREAKS},
    "masked_prior_dz50": {"type": "masked_prior", "blocks": 2, "mask_deadzone": 0.5, "bright_gate": 0, **BEFORE_STREAKS},
    "masked_subtract_dz30": {"type": "masked_prior", "blocks": 2, "composition": "subtract", "mask_deadzone": 0.3, "bright_gate": 0,
                             **BEFORE_STREAKS},
    "masked_prior_gated": {"type": "masked_prior", "blocks": 2, "bright_gate": 11, **BEFORE_STREAKS},
    "masked_subtract_gated": {"type": "masked_prior", "blocks": 2, "composition": "subtract", "mask_deadzone": 0.3, "bright_gate": 11,
                              **BEFORE_STREAKS},
    # The streak gate, trained in, by width of the mask head (11-px bright gate); then wider bright
    # gates on the 16-channel head (21 px: the default)
    **{f"masked_prior_streak_{width}": {**STREAK, "mask_channels": width} for width in (12, 16, 24)},
    **{f"masked_prior_streak_16_gate{window}": {**STREAK, "mask_channels": 16, "bright_gate": window} for window in (21, 31)},
}
# The default's arm (`masked_prior_streak_16_gate21`) with the other two compositions (session 10)
ARMS.update({f"masked_prior_streak_16_gate21_{composition}": {**ARMS["masked_prior_streak_16_gate21"], "composition": composition}
             for composition in ("subtract", "darken")})
# "<arm>@<setting>": the weights trained for <arm> (in the same invocation), evaluated with these
# model attributes changed (coarse: the inference-only half-size mask pass, `mask_scales: [1, 2]`)
INFERENCE_SETTINGS = {
    "fused_prior@0.5": {"fidelity": 0.5},
    "masked_prior_gated@streak": {"streak_gate": 0.4},
    "masked_prior_streak_16@no_streak": {"streak_gate": 0.0},
    **{f"{arm}@coarse": {"mask_scales": (1, 2)}
       for arm in ("masked_prior_streak_12", "masked_prior_streak_16", "masked_prior_streak_24", "masked_prior_streak_16_gate21")},
    # the shower check at inference (0.45: the default since session 11) and around it
    **{f"masked_prior_streak_16_gate21@shower{level}": {"shower_check": level / 100} for level in (35, 40, 45, 50)},
}
ARMS.update({arm: ARMS[arm.split("@")[0]] for arm in INFERENCE_SETTINGS})

def arm_params(base: dict, arm: str, model_dir: Path, iterations: int | None):
    from pipeline.config import parse_params

    raw = json.loads(json.dumps(base))
    raw["train"]["model"] = dict(ARMS[arm])
    raw["paths"]["model"] = str(model_dir)
    if iterations:
        raw["train"]["iterations"] = iterations
        raw["train"]["val_every"] = max(1, iterations // 4)
    return parse_params(raw, f"ablation arm {arm}")


def latency_1024(model, threads: int) -> float:
    """Median seconds of 3 forward passes of one 1024² image after a warm-up (evaluation path)."""
    import numpy as np
    import torch

    from pipeline.inference import derain_array

    torch.set_num_threads(threads)
    image = (np.random.default_rng(0).random((1024, 1024, 3)) * 255).astype(np.uint8)
    derain_array(model, image, tile=1024)
    times = []
    for _ in range(3):
        began = time.perf_counter()
        derain_array(model, image, tile=1024)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def run_arm(arm: str, base: dict, work: Path, iterations: int | None, trained: dict) -> dict:
    import torch

    from pipeline.evaluation.evaluate import evaluate_model, load_suites
    from pipeline.models.factory import create_model, load_derain_model
    from pipeline.training.train import run_train

    source = arm.split("@")[0]
    params = arm_params(base, source, work / source, iterations)
    began = time.perf_counter()
    if ARMS[arm]["type"] == "classical_median":
        model, train_seconds = create_model(ARMS[arm]).eval(), 0.0
    else:
        if source not in trained:
            run_train(params, REPO, show_progress=False)
            trained[source] = time.perf_counter() - began
        model, train_seconds = load_derain_model(work / source / "model.pt"), trained[source]
    for name, value in INFERENCE_SETTINGS.get(arm, {}).items():
        setattr(model, name, value)
    torch.set_num_threads(params.train.threads)
    result = evaluate_model(model, load_suites(params, REPO), params.evaluate.mask_threshold, report_images=0,
                            tile=params.evaluate.tile, overlap=params.evaluate.overlap)
    return {
        "arm": arm,
        "model": ARMS[arm],
        "iterations": 0 if ARMS[arm]["type"] == "classical_median" else params.train.iterations,
        "train_seconds": round(train_seconds, 1),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "latency_1024_s": round(latency_1024(model, params.train.threads), 3),
        "metrics": result.metrics,
    }


def cell(metrics: dict, suite: str) -> str:
    values = [metrics.get(f"{key}/{suite}") for key in ("psnr_rain_gain", "psnr_bg_gain", "psnr_gain")]
    return " / ".join("-" if v is None else f"{v:+.2f}" for v in values)


def markdown(rows: list[dict], suites: list[str]) -> str:
    rainy = [s for s in suites if f"psnr_rain_gain/{s}" in rows[0]["metrics"]]
    header = ["arm", "psnr/clean", *(f"{s}: rain / bg / whole gain" for s in rainy), "1024² s", "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        clean = row["metrics"].get("psnr/clean")
        lines.append("| " + " | ".join([
            row["arm"], "-" if clean is None else f"{clean:.2f}", *(cell(row["metrics"], s) for s in rainy),
            f"{row['latency_1024_s']:.2f}", f"{row['train_seconds']:.0f}",
        ]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from pipeline.config import read_params
    from pipeline.runtime import quiet_environment

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--iterations", type=int, default=None, help="training steps per arm (default: train.iterations)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {', '.join(ARMS)}")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ablation.json")
    parser.add_argument("--keep", type=Path, default=None, help="keep each arm's trained model.pt under KEEP/<arm>/ (default: a temporary folder)")
    args = parser.parse_args(argv)
    import os

    quiet_environment(os.environ)
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown arms {unknown}; choose from {', '.join(ARMS)}")
    base = read_params(args.params)  # a profile overlay comes merged onto its base
    rows, trained = [], {}
    with tempfile.TemporaryDirectory(prefix="raincheck-ablation-") as tmp:
        for arm in arms:
            print(f"[ablation] {arm} ...", file=sys.stderr, flush=True)
            rows.append(run_arm(arm, base, args.keep or Path(tmp), args.iterations, trained))
            print(markdown(rows[-1:], base["evaluate"]["suites"]), file=sys.stderr, flush=True)
    table = markdown(rows, base["evaluate"]["suites"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
