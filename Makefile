# Two set-up commands (see README): `make demo` runs the product on embedded defaults, `make test` the tests.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_HOME ?= $(CURDIR)/var/prefect

.PHONY: install test test-pg lint typecheck bench demo clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Idempotent: uv sync does nothing when .venv already matches uv.lock.
$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	@touch $@

install: $(VENV)/.synced
	@mkdir -p "$(PREFECT_HOME)"

test: install
	$(VENV)/bin/pytest

# Five trading days for five users on the simulator; options: make demo ARGS="--days 3 --users 2 --json"
demo: install
	$(VENV)/bin/autotrade demo $(ARGS)

test-pg: install
	$(VENV)/bin/pytest -m postgres

lint: install
	$(VENV)/bin/ruff check autotrade flows tasks blocks deployments tests bench
	$(VENV)/bin/mypy autotrade

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(TOOLS) var .pytest_cache .mypy_cache .ruff_cache
