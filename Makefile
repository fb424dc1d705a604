# `make test` is the one command CI runs: a fresh .venv, the project with its test extra, then
# lint, types and the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck pytest chaos demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# The fault-injection suite at full size: 20 SIGKILL rounds and bigger backlogs, the figures of
# every round printed as they come and in a table at the end (`make test` runs a short version).
chaos: $(STAMP)
	CHAOS_ROUNDS=20 CHAOS_SCALE=3 $(BIN)/pytest -s tests/chaos

# The demo runs from a plain install of the runtime dependencies alone (no test tools, and no
# editable install), in a virtualenv of its own, rebuilt when the code
# changes.
DEMO_VENV := .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.installed
DEMO_SOURCES := pyproject.toml $(shell find outbox migrations -name '*.py' -o -name '*.mako' -o -name '*.html' -o -name '*.js')

$(DEMO_STAMP): $(DEMO_SOURCES)
	$(PYTHON) -m venv $(DEMO_VENV)
	rm -rf build
	$(DEMO_VENV)/bin/pip install -q --disable-pip-version-check .
	rm -rf build
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/outbox demo

# The benchmarks also need the bench extra (pgqueuer for throughput's comparison), installed into
# the same .venv on top of the test extra.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.enqueue
	$(BIN)/python -m benchmarks.daemon
	$(BIN)/python -m benchmarks.receipts
	$(BIN)/python -m benchmarks.receiver
	$(BIN)/python -m benchmarks.throughput
	$(BIN)/python -m benchmarks.backlog
	$(BIN)/python -m benchmarks.dashboard

clean:
	rm -rf $(VENV) $(DEMO_VENV)
