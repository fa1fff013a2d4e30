"""What the prior and train steps share around their loop: resume, validate and log, finish.

A session resumes an interrupted run from `{out}/checkpoint.pt` when its fingerprint matches
(checkpoint.py; the session adds the digest of the training code to the step's fingerprint),
runs the iterations (loop.py), records a log.csv row at every validation interval, sends it to
the live MLflow run (live_log.py) and, before the last step, saves the state for a resume. It
finishes by writing the step's weights, log.csv and metrics.json atomically and dropping the
checkpoint. What a step trains, how it validates and what its weights file holds stay in the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipeline import layout
from pipeline.io import atomic_path, write_csv, write_json
from pipeline.training.checkpoint import code_digest, load_state, save_state
from pipeline.training.live_log import LiveRun
from pipeline.training.loop import LoopTiming, run_iterations

CHECKPOINT = layout.CHECKPOINT  # the resume state, in the step's output folder; deleted when the run finishes
# The code whose change makes an interrupted run's checkpoint stale (a subset of the train stage's deps).
TRAIN_CODE = tuple(Path(__file__).resolve().parents[1] / name for name in ("training", "models", "synthesis", "config.py", "params", "seeds.py"))


class TensorState:
    """A tensor kept in the checkpoint and restored in place, with a module's state_dict interface."""

    def __init__(self, tensor):
        self.tensor = tensor

    def state_dict(self):
        return self.tensor.cpu()

    def load_state_dict(self, value) -> None:
        self.tensor.copy_(value)


@dataclass
class TrainingSession:
    """One training run's bookkeeping in `out_dir`.

    fingerprint: JSON-able dict of what decides the result (params section, seed, input digests);
    parts: checkpoint key -> object with state_dict() / load_state_dict() (model, optimizer, ...);
    main: False on torchrun's other ranks, which resume but neither validate, log nor write.
    """

    out_dir: Path
    fingerprint: dict
    iterations: int
    parts: dict[str, object]
    main: bool = True
    start: int = 0  # the step this run starts from (> 0: resumed)
    rows: list[dict] = field(default_factory=list)  # log.csv so far, one row per interval
    live: LiveRun | None = None

    def __post_init__(self) -> None:
        self.fingerprint = {**self.fingerprint, "code": code_digest(*TRAIN_CODE)}

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / CHECKPOINT

    def resume(self) -> int:
        """Load the parts from a checkpoint of this very run (a stale one is deleted); returns the
        step to start from, 0 when there is nothing to resume."""
        state = load_state(self.checkpoint, self.fingerprint)
        if state is None:
            return 0
        self.start, self.rows = state["step"], list(state["rows"])
        for name, part in self.parts.items():
            part.load_state_dict(state[name])
        return self.start

    def open_live(self, kind: str, run_name: str, params: dict[str, str], root: Path) -> None:
        """Open the live MLflow run now, so its duration and curves are the training's (main rank
        only); a resumed run sends the restored part of the curve first."""
        if not self.main:
            return
        self.live = LiveRun.start(kind, run_name, params, root)
        if self.live is not None and self.rows:
            self.live.log_rows(self.rows)

    def record(self, step: int, row: dict[str, float]) -> None:
        """Append a log.csv row after `step` steps, log it live and, before the end, save the state."""
        self.rows.append({"step": step, **row})
        if self.live is not None:
            self.live.log_rows(self.rows[-1:])
        if step < self.iterations:
            state = {name: part.state_dict() for name, part in self.parts.items()}
            save_state(self.checkpoint, self.fingerprint, step, {**state, "rows": self.rows})

    def run(self, make_batch: Callable[[int], object], train_step: Callable[[int, object], dict[str, float]],
            validate: Callable[[], dict[str, float]], *, interval: int, patches_per_step: int, desc: str,
            show_progress: bool) -> LoopTiming:
        """Steps `start`..`iterations`-1 (loop.run_iterations); every `interval` steps and at the end
        the main rank records the mean training scalars and `validate()`'s scores as one row. An
        error marks the live run FAILED and propagates."""
        def on_interval(step: int, train_scalars: dict[str, float]) -> None:
            if self.main:
                self.record(step, {**train_scalars, **validate()})

        try:
            return run_iterations(
                start=self.start, end=self.iterations, make_batch=make_batch, train_step=train_step,
                interval=interval, on_interval=on_interval, patches_per_step=patches_per_step, desc=desc,
                show_progress=show_progress and self.main,
            )
        except BaseException:
            if self.live is not None:
                self.live.fail()
            raise

    def finish(self, weights_name: str, payload: dict, metrics: dict) -> Path:
        """Write the outputs (write_outputs) and close the live run with the summary; returns the weights' path."""
        weights = write_outputs(self.out_dir, weights_name, payload, self.rows, metrics)
        if self.live is not None:
            self.live.finish(metrics, weights, self.iterations)
        return weights


def write_outputs(out_dir: Path, weights_name: str, payload: dict, rows: list[dict], metrics: dict) -> Path:
    """`{out_dir}/<weights_name>` (torch.save of `payload`), log.csv and metrics.json, each written
    to a temporary name and renamed; then the checkpoint is deleted: nothing is left to resume."""
    import torch

    weights = out_dir / weights_name
    with atomic_path(weights) as tmp:
        torch.save(payload, tmp)
    write_csv(out_dir / layout.LOG, rows)
    write_json(out_dir / layout.METRICS, metrics)
    (out_dir / CHECKPOINT).unlink(missing_ok=True)
    return weights
