# The two quickstart commands (see README):
#   make demo   set up .venv with every extra, run the demo agent offline into the local store, print a report
#   make test   set up .venv with the test extra (and Chromium for the browser test), run the whole suite
#   make bench  benchmarks against OpenTelemetry, Langfuse and LangSmith (see benchmarks/README.md)
#   make test-pythons  tests/core and tests/reliability on Python 3.10, 3.12 and 3.13 (one venv each)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench system-deps test-pythons

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The peers live in their own virtualenv, never in agentmeter's dependencies.
PEERS := benchmarks/.venv-peers

$(PEERS)/.installed: pyproject.toml benchmarks/requirements-peers.txt
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install -q --upgrade pip
	$(PEERS)/bin/python -m pip install -q -e . -r benchmarks/requirements-peers.txt
	touch $@

$(VENV)/.installed-all: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[all]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed-all

demo: $(VENV)/.installed-all
	$(BIN)/agentmeter demo

# Chromium (Debian's package) drives the dashboard's browser test; playwright must never download a browser.
system-deps:
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: system-deps $(VENV)/.installed-test
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy

# BENCH_ARGS=--quick for a smoke run of the harness; the table also goes into docs/performance.md.
bench: $(PEERS)/.installed $(VENV)/.installed-test
	$(PEERS)/bin/python benchmarks/run.py --project-python $(BIN)/python --write-docs $(BENCH_ARGS)

# The core and reliability suites on the other supported Pythons (PYTHONS="3.10 3.12 3.13"), each in its
# own .venv-3.X; interpreters come from PATH, pyenv or Debian's packages (see .ci/pythons.sh).
PYTHONS ?= 3.10 3.12 3.13
test-pythons:
	bash .ci/pythons.sh $(PYTHONS)
