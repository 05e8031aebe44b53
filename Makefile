# mlebench-hpc: every entry point a user needs. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The static integrity checker every agent run uses (scripts_hpc/build_checker.sh)
CHECKER := $(VENV)/libexec/mlebench-hpc/integrity-check

RUN      ?=
DATA_DIR ?=
AGENT    ?= dummy
LLM      ?=
BUILDER  ?= auto
FORCE    ?= 0
ENV_IMAGE ?=
AGENTS_DIR ?=
# mlebench-env: light (ours) or upstream; only from the command line (shells export ENV for themselves)
MH_ENV   := $(if $(filter command line,$(origin ENV)),$(ENV),light)

.PHONY: help install test test-python test-bats lint demo grade sif cluster-up cluster-down bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Upstream MLE-bench pins pandas 2.2 and scikit-learn 1.5; .venv has pandas 3. The tests run the
# graders under both (tests/run_all.sh), so scores cannot drift with the pandas version.
PD22       := .venv-pd22
PD22_STAMP := $(PD22)/.installed
$(PD22_STAMP): pyproject.toml
	$(PYTHON) -m venv $(PD22)
	$(PD22)/bin/pip install -q --upgrade pip
	$(PD22)/bin/pip install -q 'pandas==2.2.*' 'scikit-learn==1.5.*' 'numpy<2.3' tqdm pytest pytest-timeout
	$(PD22)/bin/pip install -q -e .
	touch $@

$(CHECKER): environment/integrity_check.c scripts_hpc/build_checker.sh | $(STAMP)
	bash scripts_hpc/build_checker.sh --out $@ --python $(BIN)/python

install: $(STAMP) $(CHECKER) ## create .venv with the package, the integrity checker and the test tools (idempotent)

test: $(STAMP) $(CHECKER) $(PD22_STAMP) ## install what is needed (and, as root, bring up the local Slurm + Apptainer), run every test
	bash tests/run_all.sh

test-python: $(STAMP) ## pytest only
	$(BIN)/pytest -q

test-bats: $(STAMP) ## bats only
	bash tests/run_all.sh --bats-only

lint: $(STAMP) ## shellcheck + ruff
	bash tests/lint.sh

demo: $(STAMP) $(CHECKER) ## run the heterogeneous job on a demo competition (Slurm + Apptainer when present)
	bash scripts_hpc/demo.sh

grade: $(STAMP) ## grade a run or run group: make grade RUN=dir [DATA_DIR=dir] [ARGS="--split low --pad-missing ..."]
	@[ -n "$(RUN)" ] || { echo "usage: make grade RUN=<run dir or group dir> [DATA_DIR=<dir>]" >&2; exit 2; }
	$(BIN)/mlebench-hpc grade "$(RUN)" $(if $(DATA_DIR),--data-dir "$(DATA_DIR)") $(ARGS)

sif: $(STAMP) $(CHECKER) ## build images: make sif [AGENT=name] [AGENTS_DIR=dir] [BUILDER=auto|docker|apptainer] [ENV=light|upstream] [ENV_IMAGE=image] [LLM=vllm] [FORCE=1]
	bash scripts_hpc/build_images.sh --agent "$(AGENT)" --builder "$(BUILDER)" --env "$(MH_ENV)" \
		$(if $(filter 1,$(FORCE)),--force) $(if $(LLM),--llm "$(LLM)") \
		$(if $(AGENTS_DIR),--agents-dir "$(AGENTS_DIR)") $(if $(ENV_IMAGE),--env-image "$(ENV_IMAGE)")

cluster-up: ## (root) the site: a local Slurm, Apptainer, a Docker daemon and a registry with the base image
	bash scripts_hpc/provision/cluster_up.sh

cluster-down: ## (root) stop the local Slurm, the Docker daemon and the registry
	bash scripts_hpc/provision/cluster_down.sh

bench: $(STAMP) ## benchmarks that print their figures
	$(BIN)/python bench/validate_bench.py

clean: ## remove .venv and .demo (images and caches live outside the checkout)
	rm -rf $(VENV) $(PD22) .demo
