"""Same data + params, same outputs on another CPU of the kind (README, "Determinism").

Another machine of the same kind may have AVX-512 where this one has AVX2: numpy, torch (ATen,
oneDNN, MKL) and numba then run other kernels. The slow tests force the other paths reachable on
this machine (numpy without its dispatched targets, ATen's default kernels, oneDNN and MKL capped
at SSE4, numba for a generic CPU, two threads) in a second process: synthesis must give the same
suites, streak kernels and training rain byte for byte, training the same metrics within
TRAINING_TOLERANCE_DB. The fast ones check the pieces: kernels independent of their batch, the
math-based helpers, and the pinning of torch's dispatch in the CLI.
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.config import parse_params
from pipeline.io import save_png
from pipeline.synthesis.kernels import streak_kernels
from pipeline.synthesis.ood_rain import _elementwise, _gaussian_blur
from pipeline.synthesis.stamping import _log
from tests.conftest import REPO, textured_photo

# Streak kernels the recipe can ask for (length, angle, width), width 11 through the formula.
KEYS = [(length, angle, width) for length in (25, 40, 55) for angle in (-60, -17, 0, 33, 60) for width in (1, 3, 5, 7, 9, 11)]

# What the second process runs: the synthesize step on the fixture, then the float data the
# suites are rounded from (the kernels, built in one batch as training does and one at a time as
# the suites do) and a batch of training rain.
CHILD = """
import sys
from pathlib import Path
import numpy as np, torch, yaml
from pipeline.config import parse_params
from pipeline.synthesis.kernels import streak_kernels
from pipeline.synthesis.rain import rainify_batch
from pipeline.synthesis.suites import run_synthesize
root = Path(sys.argv[1])
KEYS = eval(sys.argv[2])
run_synthesize(parse_params(yaml.safe_load((root / "params.yaml").read_text())), root)
keys = torch.tensor(KEYS)
batched = streak_kernels(keys[:, 0], keys[:, 1], keys[:, 2])[0].numpy()
single = [streak_kernels(*(k[None] for k in key))[0].numpy() for key in keys]
clean = torch.from_numpy(np.load(root / "patches.npy"))
rainy, layers = rainify_batch(clean, ["small", "medium", "large"], 1.0, torch.Generator().manual_seed(5))
np.savez(root / "floats.npz", batched=batched, single=np.concatenate([s.ravel() for s in single]),
         rainy=rainy.numpy(), layers=layers.numpy())
"""


def _other_paths(tmp_path: Path) -> dict[str, str]:
    """Environment variables that send numpy, torch, oneDNN, MKL and numba down other code paths."""
    from numpy._core._multiarray_umath import __cpu_dispatch__  # numpy's run-time SIMD targets

    return {
        "NPY_DISABLE_CPU_FEATURES": " ".join(__cpu_dispatch__),  # numpy at its baseline (X86_V2)
        "ATEN_CPU_CAPABILITY": "default",  # torch's non-vectorized kernels
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "NUMBA_CPU_NAME": "generic",
        "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"),  # keep the generic build out of the repo's cache
        "OMP_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "2",
        "NUMBA_NUM_THREADS": "2",
    }


def _fixture(root: Path) -> None:
    """Curated eval images (3 test, 2 val, 80×96), the repo's synthesize params, training patches."""
    raw = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text()))
    params = parse_params(raw)
    rng = np.random.default_rng(11)
    for split, count in (("test", 3), ("val", 2)):
        for i in range(count):
            save_png(root / params.paths.curated / "eval" / split / f"photo-{i}.png", textured_photo(rng, 80, 96))
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    np.save(root / "patches.npy", rng.random((6, 3, 64, 64), dtype=np.float32))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_synthesis_is_byte_identical_on_other_simd_paths(tmp_path: Path):
    roots = {"default": tmp_path / "default", "other": tmp_path / "other"}
    other = _other_paths(tmp_path)
    # The default process: this one's environment (one thread) without any dispatch setting.
    default = {k: v for k, v in os.environ.items() if k not in other or k.endswith("_THREADS")}
    for name, root in roots.items():
        _fixture(root)
        env = {**(default if name == "default" else {**os.environ, **other}), "PYTHONPATH": str(REPO)}
        command = [sys.executable, "-c", CHILD, str(root), repr(KEYS)]
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{name}: {result.stderr[-3000:]}"
    suites = {name: _files(root / "build" / "suites") for name, root in roots.items()}
    assert len(suites["default"]) >= 7 * 3 + 1  # every suite's folders, manifests and the gallery
    assert sorted(suites["default"]) == sorted(suites["other"])
    differing = [path for path, data in suites["default"].items() if data != suites["other"][path]]
    assert differing == [], f"suite files differ between SIMD paths: {differing}"
    floats = {name: np.load(root / "floats.npz") for name, root in roots.items()}
    for key in ("batched", "single", "rainy", "layers"):
        a, b = floats["default"][key], floats["other"][key]
        assert a.tobytes() == b.tobytes(), f"{key}: {np.count_nonzero(a != b)} of {a.size} values differ between SIMD paths"


def test_a_kernel_does_not_depend_on_its_batch():
    """The same (length, angle, width) gives the same float32 weights alone or in any batch (once,
    conv2d took oneDNN for a batch and BLAS for one kernel, and their sums differed in the last bit)."""
    keys = torch.tensor(KEYS)
    batched, pad = streak_kernels(keys[:, 0], keys[:, 1], keys[:, 2])
    for i, key in enumerate(keys):
        alone, own_pad = streak_kernels(*(k[None] for k in key))
        inside = (slice(pad - own_pad, pad + own_pad + 1),) * 2
        assert torch.equal(alone[0], batched[i][inside]), KEYS[i]
        outside = batched[i].clone()
        outside[inside] = 0
        assert not outside.any()  # nothing beyond its own extent


def test_math_based_helpers_compute_what_numpy_would():
    rng = np.random.default_rng(0)
    theta = rng.uniform(-1.5, 1.5, (40, 3))
    assert _elementwise(math.cos, theta).shape == theta.shape
    np.testing.assert_allclose(_elementwise(math.cos, theta), np.cos(theta), rtol=1e-15, atol=0)
    t = np.repeat(np.linspace(0, 1, 41), 3)  # repeated values are computed once
    np.testing.assert_allclose(_elementwise(lambda x: math.sin(math.pi * x) ** 0.7, t), np.sin(np.pi * t) ** 0.7, rtol=1e-14, atol=1e-15)
    from scipy import ndimage

    image = rng.uniform(0, 255, (30, 41, 3))
    for sigma in (0.8, 1.37, 2.0):
        np.testing.assert_allclose(_gaussian_blur(image, sigma), ndimage.gaussian_filter(image, (sigma, sigma, 0)), rtol=0, atol=1e-9)
    u = torch.tensor([0.0, 1e-300, 0.25, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(_log(u)[1:], torch.log(u)[1:], rtol=1e-15, atol=0) and _log(u)[0] == -math.inf
    assert torch.allclose(_log(u, complement=True)[:-1], torch.log1p(-u)[:-1], rtol=1e-15, atol=0)
    assert _log(u, complement=True)[-1] == -math.inf and _log(u[:1], complement=True)[0] == 0.0


# Training is float arithmetic whose kernels follow the CPU: not byte-identical across SIMD paths,
# only close. README, "Determinism": the default run's PSNR metrics moved by at most 0.08 dB
# between two float paths; the test-sized run below moved by 0.03 dB. Both promise 0.1 dB.
TRAINING_TOLERANCE_DB = 0.1

TRAIN_CHILD = """
import sys
from pathlib import Path
from pipeline.runtime import pin_cpu_dispatch, project_environment
from pipeline.training.prior import run_prior
from pipeline.training.train import run_train
from tests.model.test_training import tiny_params
root = Path(sys.argv[1])
pin_cpu_dispatch()  # as the CLI does (the other path's settings come first and stay)
project_environment(root)
params = tiny_params(iterations=150, val_every=150)
run_prior(params, root, show_progress=False)
run_train(params, root, show_progress=False)
"""


def _training_workspace(root: Path) -> Path:
    """test_training's tiny workspace with 12 validation images of 48×56 instead of 2 small ones:
    a PSNR over more pixels, so that the comparison measures float drift, not a few pixels."""
    from pipeline.synthesis.rain import synthesize_rain
    from tests.model.test_training import build_workspace, tiny_params

    params = tiny_params()
    build_workspace(root, params)
    rng = np.random.default_rng(3)
    folder = root / params.paths.suites / "val"
    for index in range(2, 14):
        clean = textured_photo(rng, 48, 56)
        rainy, layer, _ = synthesize_rain(clean, ["medium"], seed=200 + index)
        for kind, image in (("clean", clean), ("rainy", rainy), ("rain", layer)):
            save_png(folder / kind / f"img{index}.png", image)
    return root


@pytest.mark.slow
def test_training_on_another_float_path_lands_within_the_tolerance(tmp_path: Path):
    from pipeline.io import read_json
    from tests.model.test_training import tiny_params

    float_paths = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}
    metrics = {}
    for name, extra in (("default", {}), ("other", float_paths)):
        root = _training_workspace(tmp_path / name)  # the same data: built here, not in the child
        env = {**{k: v for k, v in os.environ.items() if k not in float_paths}, **extra, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        result = subprocess.run([sys.executable, "-c", TRAIN_CHILD, str(root)], cwd=REPO, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{name}: {result.stderr[-3000:]}"
        metrics[name] = read_json(root / tiny_params().paths.model / "metrics.json")
    psnr = [key for key in metrics["default"] if key.startswith("psnr")]
    assert psnr, metrics["default"]
    gaps = {key: abs(metrics["default"][key] - metrics["other"][key]) for key in psnr}
    assert max(gaps.values()) <= TRAINING_TOLERANCE_DB, gaps


def test_torch_dispatch_is_pinned_only_where_the_cpu_has_avx2():
    from pipeline.runtime import PINNED_DISPATCH, pin_cpu_dispatch

    assert pin_cpu_dispatch({}, flags={"sse4_2", "avx2", "fma"}) == PINNED_DISPATCH
    assert pin_cpu_dispatch({}, flags={"sse4_2", "avx"}) == {}  # ATen's AVX2 kernels would not run here
    assert pin_cpu_dispatch({}, flags=set()) == {}  # no /proc/cpuinfo: nothing is assumed
    mine = {"ATEN_CPU_CAPABILITY": "avx512"}
    assert pin_cpu_dispatch(mine, flags={"avx2", "fma"})["ATEN_CPU_CAPABILITY"] == "avx512"  # the user's choice stays


def test_the_cli_pins_before_torch_runs():
    """A stage process (`python -m pipeline ...`) really runs ATen's AVX2 kernels, or its own choice."""
    from pipeline.runtime import _cpu_flags

    if not {"avx2", "fma"} <= _cpu_flags():
        pytest.skip("this CPU has no AVX2 + FMA: nothing is pinned")
    code = "import torch\nfrom pipeline.cli import main\nmain(['--help'])"
    probe = "import atexit, torch\natexit.register(lambda: print('capability', torch.backends.cpu.get_cpu_capability()))\n"
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")}
    for extra, expected in (({}, "AVX2"), ({"ATEN_CPU_CAPABILITY": "default"}, "DEFAULT")):
        result = subprocess.run([sys.executable, "-c", probe + code], cwd=REPO, capture_output=True, text=True,
                                env={**env, **extra, "PYTHONPATH": str(REPO)})
        assert f"capability {expected}" in result.stdout, result.stdout[-500:] + result.stderr[-2000:]
