# The two commands of the README: `make demo` (the closed loop) and `make test` (the whole suite).
# Both set everything up on a fresh machine: a virtualenv with clicktune and its extras, then the
# local OpenSearch + Kafka (`clicktune services up`, fetched from Maven Central and cached).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup services services-down demo test test-unit lint

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[tuner,dev]'
	@touch $(STAMP)

services: setup
	$(BIN)/clicktune services up

services-down:
	@test -x $(BIN)/clicktune && $(BIN)/clicktune services down || true

demo: services
	$(BIN)/clicktune demo $(DEMO_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test-unit: setup
	$(BIN)/pytest -m "unit" $(PYTEST_ARGS)

test: services lint
	$(BIN)/pytest $(PYTEST_ARGS)
