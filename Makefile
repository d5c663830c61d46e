# The two quickstart commands (see README):
#   make demo   set up .venv with every extra, run the demo agent offline into the local store, print a report
#   make test   set up .venv with every extra and the dev dependency group (and Chromium for the browser
#               test), check the built wheel and sdist (make check-dist), run the whole suite, then the
#               integration tests again on openai 2.x (make test-openai2)
#   make bench  benchmarks against OpenTelemetry, Langfuse and LangSmith (see benchmarks/README.md)
#   make test-pythons  tests/core and tests/reliability on Python 3.10, 3.12 and 3.13 (one venv each)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-openai2 test-pythons lint bench system-deps check-dist

# pip 25.1 is the first to install PEP 735 dependency groups (--group), where the dev dependencies live.
PIP_MIN := 'pip>=25.1'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade $(PIP_MIN)

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
	$(BIN)/python -m pip install -q -e '.[all]' --group dev
	touch $@ $(VENV)/.installed-all

demo: $(VENV)/.installed-all
	$(BIN)/agentmeter demo

# Chromium (Debian's package) drives the dashboard's browser test; playwright must never download a browser.
system-deps:
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: system-deps $(VENV)/.installed-test
	$(MAKE) check-dist
	$(BIN)/python -m pytest
	$(MAKE) test-openai2

# The sdist and the wheel as PyPI would get them (python -m build makes the wheel from the unpacked sdist,
# so the sdist is shown to be enough to build from), then twine check --strict: complete metadata, and a
# README that renders on PyPI.
DIST := build/dist
check-dist: $(VENV)/.installed-test
	rm -rf $(DIST)
	$(BIN)/python -m build --no-isolation --outdir $(DIST) . >/dev/null
	$(BIN)/python -m twine check --strict $(DIST)/*

# .venv gets openai 3.x from the extras; the integrations are tested on openai 2.x too, in two more venvs:
# the oldest versions the integrations support (openai 2.31.0, anthropic 1.0.0) and the newest openai 2.x
# (what CrewAI, LlamaIndex and openai-agents users get). test_resolution needs one interpreter only.
OPENAI2_PINS_oldest := 'openai==2.31.0' 'anthropic==1.0.0'
OPENAI2_PINS_newest := 'openai>=2.31,<3'
OPENAI2_TESTS := tests/integrations --ignore=tests/integrations/test_resolution.py -p no:cacheprovider

.venv-openai2-%/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-openai2-$*
	.venv-openai2-$*/bin/python -m pip install -q --upgrade pip
	.venv-openai2-$*/bin/python -m pip install -q -e '.[openai,anthropic,tavily]' $(OPENAI2_PINS_$*) \
	  'pytest>=8' 'pytest-timeout>=2.3' 'hypothesis>=6.100'
	touch $@

test-openai2: .venv-openai2-oldest/.installed .venv-openai2-newest/.installed
	.venv-openai2-oldest/bin/python -m pytest $(OPENAI2_TESTS)
	.venv-openai2-newest/bin/python -m pytest $(OPENAI2_TESTS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy

# BENCH_ARGS=--quick for a smoke run of the harness; BENCH_ARGS=--write-docs puts the table into
# docs/performance.md and the JSON into benchmarks/results/ (otherwise benchmarks/results/scratch/).
bench: $(PEERS)/.installed $(VENV)/.installed-test
	$(PEERS)/bin/python benchmarks/run.py --project-python $(BIN)/python $(BENCH_ARGS)

# The core and reliability suites on the other supported Pythons (PYTHONS="3.10 3.12 3.13"), each in its
# own .venv-3.X; interpreters come from PATH, pyenv, Debian's packages or are built from Debian's source
# package (3.13 and later; see .ci/pythons.sh).
PYTHONS ?= 3.10 3.12 3.13
test-pythons:
	bash .ci/pythons.sh $(PYTHONS)
