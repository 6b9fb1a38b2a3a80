# The two commands a newcomer runs: `make serve` (the stack on the default model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STORE ?= $(or $(SERVE_MODEL_STORE),models)
PIP_VERSION := 26.3

.DEFAULT_GOAL := help
.PHONY: help install install-dev system-deps deploy-tools client-tools model serve serve-async settings settings-table test check bench soak loadtest predict-files clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/.runtime: requirements.txt requirements-fast.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip==$(PIP_VERSION)
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet -r requirements-fast.txt 2>/dev/null || echo "gunicorn_h1c could not be built (no C compiler?): gunicorn keeps its pure-Python HTTP parser"
	$(BIN)/pip install --quiet --no-deps -e .  # the api package and its console script, keras-serving
	touch $@

$(BIN)/.dev: $(BIN)/.runtime requirements-dev.txt requirements-batch.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-batch.txt  # Ray Data, for tests/files/test_predict_files_ray.py
	touch $@

install: $(BIN)/.runtime  ## virtualenv with the pinned runtime dependencies
system-deps:  ## nginx, prometheus and slowhttptest from the distribution's packages, if missing
	@scripts/install_system_deps.sh
install-dev: $(BIN)/.dev  ## ... and the pinned test tools
deploy-tools:  ## packer, shellcheck, systemd (Debian) and cfn-lint, checkov (own venv) for deploy/'s checks
	@scripts/install_deploy_tools.sh

$(STORE)/digits/1/model.keras: | $(BIN)/.runtime
	$(BIN)/keras-serving train-digits $(STORE)

model: $(STORE)/digits/1/model.keras  ## train the default model (digits) if the store has none

serve: install system-deps model  ## nginx + gunicorn on the default model: http://127.0.0.1:8080 (Ctrl-C stops)
	SERVE_MODEL_STORE=$(STORE) $(BIN)/keras-serving serve

QUEUE_WORKERS ?= 1
serve-async: install system-deps model  ## serve + a local redis-server + job workers: POST .../:submit, GET /v1/jobs/<id> (docs/async.md)
	SERVE_MODEL_STORE=$(STORE) SERVE_QUEUE_BACKEND=redis SERVE_QUEUE_WORKERS=$(QUEUE_WORKERS) $(BIN)/keras-serving serve-async

settings: install  ## print every setting: SERVE_NAME=effective value  # what it does
	@$(BIN)/keras-serving settings

check: install-dev  ## static checks: gunicorn's own config check
	$(BIN)/gunicorn --check-config -c gunicorn.conf.py wsgi:app

settings-table: install  ## the README's settings table, from api/settings.py
	@$(BIN)/keras-serving settings --table

INPUT ?=
OUTPUT ?= run/predictions
ARGS ?=
predict-files: install model  ## predict every row of files: make predict-files INPUT='data/*.jsonl' [OUTPUT=dir] [ARGS='--resume --top-k 3'] (docs/batch.md)
	@test -n "$(INPUT)" || { echo "usage: make predict-files INPUT='data/*.jsonl' [OUTPUT=$(OUTPUT)] [ARGS=...]" >&2; exit 2; }
	SERVE_MODEL_STORE=$(STORE) $(BIN)/keras-serving predict-files $(INPUT) --output $(OUTPUT) $(ARGS)

client-tools:  ## KServe's Python SDK in its own virtualenv, .venv/clients (its pins clash with ours)
	@scripts/install_client_venvs.sh

test: install-dev system-deps deploy-tools client-tools check  ## the whole test suite (real gunicorn, real TensorFlow, real HTTP)
	$(BIN)/python -m pytest

bench: install-dev system-deps  ## throughput and latency against the in-process limit and the peers (docs/performance.md)
	@command -v wrk >/dev/null || apt-get install -y -q wrk
	$(BIN)/python -m bench $(BENCH_ARGS)

SOAK_ARGS ?=
soak: install-dev system-deps  ## the stack at ~70% of capacity for an hour: memory, fds, nginx errors (docs/soak.md)
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

URL ?= http://127.0.0.1:8080
SHAPE ?=
USERS ?=
RUN_TIME ?=
WORKERS ?= 0
REPORTS ?= run/loadtest
LOCUST_ARGS ?=
loadtest: install-dev  ## locust with SLO gates against a running stack: make loadtest URL=... [SHAPE=step] (exit 1: a gate broke)
	$(BIN)/python -m loadtest.run --host $(URL) --report-dir $(REPORTS) --workers $(WORKERS) $(if $(SHAPE),--shape $(SHAPE)) $(if $(USERS),--users $(USERS)) $(if $(RUN_TIME),--run-time $(RUN_TIME)) $(LOCUST_ARGS)

clean:  ## remove the virtualenv, the trained model and runtime state
	rm -rf $(VENV) $(STORE)/digits run .pytest_cache
