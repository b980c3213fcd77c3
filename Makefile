# The two commands of the README: `make demo` (the closed loop) and `make test` (the whole suite).
# Both set everything up on a fresh machine: a virtualenv with clicktune and its extras, then the
# local OpenSearch + Kafka (`clicktune services up`, fetched from Maven Central and cached).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup services services-down demo test test-unit lint browser

setup: $(STAMP)

# The virtualenv takes ~7 GiB (torch pulls its CUDA wheels from PyPI): say so before pip fails
# half-way with "No space left on device".
MIN_FREE_GIB := 10

$(STAMP): pyproject.toml
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	 if [ "$$free" -lt $(MIN_FREE_GIB) ]; then \
	   echo "setup: only $$free GiB free on $$(df -P . | awk 'NR==2 {print $$6}'); the virtualenv needs $(MIN_FREE_GIB) GiB (torch with its CUDA wheels). Free some space and run again." >&2; \
	   exit 1; fi
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[tuner,dev,openvino,scale]'
	@touch $(STAMP)

services: setup
	$(BIN)/clicktune services up

services-down:
	@test -x $(BIN)/clicktune && $(BIN)/clicktune services down || true

# Ten shoppers per train query (2,020 searches a round on products-synth): with the default three
# (606) the gate's held-out sessions are too few to tell a better candidate from chance.
DEMO_ARGS ?= --users-per-query 10 --score-candidates

demo: services
	$(BIN)/clicktune demo $(DEMO_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test-unit: setup
	$(BIN)/pytest -m "unit" $(PYTEST_ARGS)

# Debian's headless Chromium and its WebDriver for the /dashboard test; installed only when missing
# (apt-get as root, else through sudo).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium chromium-driver; }

test: services lint browser
	$(BIN)/pytest $(PYTEST_ARGS)
