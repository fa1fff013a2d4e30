"""Serving latency and memory per image size: the basis of codec.SERVING_MAX_PIXELS.

For each square size, a fresh process loads the served pyfunc (pipeline.serving.pyfunc.DerainPyfunc,
the code `mlflow models serve` runs, tiling from evaluate.tile / evaluate.overlap) with a
deraining checkpoint, then answers one one-row request (base64 PNG in, base64 PNG out: decode,
derain, encode) twice: the first in a cold process, the second warm. Reported per size: both
latencies and the process's peak resident memory (ru_maxrss) after the two requests, beside its
memory after loading the model.

The checkpoint: `--model PATH` (a trained model.pt), else the params' architecture with random
weights (speed and memory do not depend on the weights).

    python benchmarks/bench_serving.py [--model build/model/model.pt] [--sizes 512,1024,2048]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _request(size: int):
    """A one-row request: a textured size x size RGB photo as base64 PNG."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from tests.conftest import textured_photo

    buffer = io.BytesIO()
    Image.fromarray(textured_photo(np.random.default_rng(size), size, size)).save(buffer, format="PNG")
    return pd.DataFrame({"image": [base64.b64encode(buffer.getvalue()).decode()]})


def measure(model_path: str, size: int, tile: int, overlap: int) -> dict:
    """One size, in this (fresh) process: cold and warm latency (s), RSS after load and peak (MB)."""
    from mlflow.pyfunc import PythonModelContext

    from pipeline.serving.pyfunc import CHECKPOINT_ARTIFACT, DerainPyfunc

    served = DerainPyfunc()
    # The limit under test must not refuse the sizes being measured.
    served.load_context(PythonModelContext({CHECKPOINT_ARTIFACT: model_path}, {"tile": tile, "overlap": overlap, "max_pixels": 1 << 40}))
    request = _request(size)
    loaded_mb = _rss_now_mb()
    times = []
    for _ in range(2):
        start = time.perf_counter()
        answer = served.predict(None, request)
        times.append(time.perf_counter() - start)
        assert answer["error"][0] is None
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": size, "cold_s": round(times[0], 2), "warm_s": round(times[1], 2), "rss_loaded_mb": round(loaded_mb), "rss_peak_mb": round(peak_mb)}


def _rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def random_checkpoint(params_path: Path, out: Path) -> str:
    """The params' architecture with random weights and its mask forced open (the rainy path, as in
    bench_evaluate), saved as a model.pt."""
    import torch

    from bench_evaluate import build_model
    from pipeline.config import PRIOR_ARCHITECTURES
    from pipeline.models.factory import derain_checkpoint

    model, params = build_model(params_path, "cpu")
    prior_spec = params.prior.model if params.train.model.type in PRIOR_ARCHITECTURES else None
    torch.save(derain_checkpoint(params.train.model, model.state_dict(), prior_spec), out)
    return str(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--model", default=None, help="model.pt to serve (default: random weights of the params' model)")
    parser.add_argument("--sizes", default="512,1024,2048,3072")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    from pipeline.config import load_params
    from pipeline.runtime import fast_allocation

    fast_allocation()
    params = load_params(args.params)
    tile, overlap = params.evaluate.tile, params.evaluate.overlap
    if args.one is not None:
        print(json.dumps(measure(args.model, args.one, tile, overlap)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or random_checkpoint(args.params, Path(tmp) / "model.pt")
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, model {model} "
              f"({params.train.model.type}), tile {tile}, overlap {overlap}")
        for size in (int(s) for s in args.sizes.split(",")):
            child = subprocess.run([sys.executable, __file__, "--params", str(args.params), "--model", model, "--one", str(size)],
                                   capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            if child.returncode != 0:
                print(f"{size}: failed\n{child.stderr[-2000:]}", file=sys.stderr)
                return 1
            print(child.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
