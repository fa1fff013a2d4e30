"""The pipeline's stages, declared once, in the order data flows through them.

Everything that lists the stages follows from STAGES: the CLI's step subcommands (pipeline/cli.py),
the Prefect flow's stage tasks (flows/retrain.py), the flow benchmark (benchmarks/bench_flow.py).
dvc.yaml cannot import Python, so tests/unit/test_stages.py checks that its stages, their order and
their declared outputs equal this list, and tests/unit/test_dvc_deps.py that each stage's code deps
cover the import closure of its `module`. The Makefile help is prose that points here.

Deliberately not imported by the steps themselves: a help-text edit here must not re-run a stage
(the CLI's dispatch code is left out of the code deps for the same reason).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline import layout


@dataclass(frozen=True)
class Stage:
    """One step: `python -m pipeline <name>` calls `module.function(params, root)`.

    `folder` is the params `paths` key the step writes under (None: it writes none of its own);
    `artifacts` the file names there that other code reads (pipeline.layout). `dvc` is False for
    a step that is not a DVC stage (ingest: the raw pool is tracked by data.dvc instead)."""

    name: str
    module: str
    function: str
    help: str
    folder: str | None = None
    artifacts: tuple[str, ...] = ()
    dvc: bool = True


STAGES: tuple[Stage, ...] = (
    Stage("ingest", "pipeline.ingestion.ingest", "run_ingest",
          "build the raw background pool in data/ from the configured sources", folder="pool", dvc=False),
    Stage("curate", "pipeline.curation.curate", "run_curate",
          "measure, dedupe, split and select background patches; run the data checks", folder="curated"),
    Stage("synthesize", "pipeline.synthesis.suites", "run_synthesize",
          "materialize the seen/unseen rain test suites with their rain masks", folder="suites"),
    Stage("prior", "pipeline.training.prior", "run_prior",
          "pre-train the VQ autoencoder content prior on clean backgrounds (or measure and adopt your own)",
          folder="prior", artifacts=(layout.PRIOR, layout.METRICS, layout.LOG)),
    Stage("train", "pipeline.training.train", "run_train",
          "train the deraining network with on-the-fly rain through the prior",
          folder="model", artifacts=(layout.MODEL, layout.METRICS, layout.LOG)),
    Stage("evaluate", "pipeline.evaluation.evaluate", "run_evaluate",
          "masked evaluation on seen and unseen rain (rain region vs background)",
          folder="evaluation", artifacts=(layout.METRICS,)),
)

BY_NAME = {stage.name: stage for stage in STAGES}
# The DVC stages, in order: what the retrain flow runs as tasks between ingest and register.
DVC_STAGES: tuple[str, ...] = tuple(stage.name for stage in STAGES if stage.dvc)
