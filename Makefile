# Set-up and main jobs. `make run` and `make test` each create the environment first (idempotent).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 CPU installs from a local file on the project's machines; GPU users: make env TORCH=torch
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed
RUN_SPECS ?= configs/tiny_wan.yaml configs/tiny_wan_static.yaml
RUN_RESULTS ?= results/tiny-wan

.PHONY: env run test clean vbench-env

env: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH)"
	# lpips only for its small linear-head weights: --no-deps keeps torchvision (and another torch) out
	$(BIN)/pip install -q --disable-pip-version-check --no-deps "lpips==0.1.4"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

run: env
	@for spec in $(RUN_SPECS); do $(BIN)/sencache-bench run $$spec --quiet || exit $$?; done
	$(BIN)/sencache-bench table $(RUN_RESULTS)

test: env
	$(BIN)/pytest -q

# VBench in its own environment (it pins transformers 4.33.2 and numpy<2): sencache-bench vbench RESULTS_DIR
VBENCH_ENV ?= .venv-vbench
vbench-env: env
	$(BIN)/sencache-bench vbench setup --env $(VBENCH_ENV)

clean:
	rm -rf $(VENV) .pytest_cache
