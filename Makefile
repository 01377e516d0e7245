# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: install dev demo lint test bench clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The service extras: API, workers, dashboard (the science alone is `pip install .`).
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/activate
	$(PIP) install -q -e '.[service]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/activate
	$(PIP) install -q -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

demo: install
	$(VENV)/bin/robaudit demo

# ruff (lint, import order) and mypy (strict on robaudit/ and models/, gradual on the service).
lint: dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Starts PostgreSQL/Redis if they are installed but down; suites whose services are missing are
# skipped and named in a banner at the end (under CI=1 they fail instead). Two pytest processes, one
# test file each at a time (--dist loadfile keeps a file's module fixtures, like its served instance,
# in one process): most service tests wait on a subprocess that uses one core.
TEST_WORKERS ?= 2
test: lint
	scripts/test-services.sh
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# Each benchmark prints its own table; figures and commands are recorded in BENCHMARKS.md.
bench: dev
	for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
