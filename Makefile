# raincheck: `make run` runs the whole pipeline, `make test` runs the tests.
# Both create the virtual environment on first use.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.raincheck-installed
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PYTHONUNBUFFERED := 1

.PHONY: run test test-fast venv repro bench serve stop serve-model study study-apply plots check-layout help

# The stage names below are prose: the stages are declared in pipeline/stages.py (`raincheck --help`).
help:
	@echo "make run    - whole pipeline on the default pool: fetch photos, curate, synthesize, train, evaluate, register"
	@echo "             (stages declared in pipeline/stages.py; \`python -m pipeline --help\` lists them)"
	@echo "make test   - the test suite, everything (what CI runs; 2 processes, TEST_WORKERS=1 for one)"
	@echo "make test-fast - the edit loop: every test not marked slow (pytest -m \"not slow\")"
	@echo "make repro  - the DVC stages alone, without Prefect (dvc repro with the venv on PATH; ARGS=... passed on)"
	@echo "make plots  - the dvc.yaml plots as PNG files + index.html in build/plots, viewable offline"
	@echo "make serve  - start a local Prefect server and serve the scheduled retrain (schedule: in params.yaml), in the background"
	@echo "make stop   - stop what make serve started"
	@echo "make serve-model - serve the champion over HTTP on 127.0.0.1:5001 (ARGS='--version 2 --port 5002' passed on)"
	@echo "make study  - the generalization study (STUDY=profiles/study-quick.yaml by default)"
	@echo "make study-apply - write the study's recommendation (build/study) into params.yaml: diff, params.yaml.bak (ARGS=--dry-run)"
	@echo "make bench  - performance benchmarks (benchmarks/)"
	@echo "make check-layout - the import arrows (no cycle, no import against the layers) and one spelling per file name"
	@echo "             (\`python -m pipeline.layering\`; README \"Layout\")"
	@echo "make venv   - only create/update the virtual environment ($(VENV))"
	@echo "make help   - this list"

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[raincheck] installing packages into $(VENV) (first time: a few minutes)"
	@# uv with pip's indexes and constraints, byte-compiled on every core (pip + compileall where uv
	@# cannot be had). Without .pyc files every process would compile torch, mlflow and prefect again
	@# (PYTHONDONTWRITEBYTECODE). pipeline/install.py says how; INSTALL_ARGS=--pip-only for pip.
	@$(PY) -m pipeline.install $(INSTALL_ARGS) 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m flows retrain

# TEST_WORKERS=1 runs them in one process. --dist loadfile keeps a file's tests (and its
# module-scoped workspaces) on one worker.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile

# Stage commands in dvc.yaml call `python`: it must be the venv's, hence PATH above.
repro: $(STAMP)
	DVC_NO_ANALYTICS=1 $(PY) -m dvc repro $(ARGS)

bench: $(STAMP)
	@test -f requirements-bench.txt && $(PY) -m pip install -q -r requirements-bench.txt 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b; done

serve: $(STAMP)
	$(PY) -m flows serve

stop: $(STAMP)
	$(PY) -m flows stop

serve-model: $(STAMP)
	$(PY) -m pipeline serve-model $(ARGS)

plots: $(STAMP)
	$(PY) -m pipeline plots

check-layout: $(STAMP)
	$(PY) -m pipeline.layering

study: $(STAMP)
	$(PY) -m flows study --params $(or $(STUDY),profiles/study-quick.yaml)

study-apply: $(STAMP)
	$(PY) -m pipeline study apply $(ARGS)
