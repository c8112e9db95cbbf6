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

# The web app (web/, Next.js static export served by `autotrade api serve` at /): rebuilt only when a file
# under web/ changed. It needs Node.js 18+ and npm; without them the API still runs, and this says so.
WEB_SRC := $(shell find web -path web/node_modules -prune -o -path web/.next -prune -o -path web/out -prune \
	-o -type f ! -name next-env.d.ts -print 2>/dev/null)
web/node_modules/.package-lock.json: web/package-lock.json
	@command -v npm >/dev/null || { echo "make install: npm not found: install Node.js 18+ (apt-get install nodejs npm) to build the web app; the API runs without it"; exit 0; }
	cd web && NEXT_TELEMETRY_DISABLED=1 npm ci --no-audit --no-fund --loglevel=error

web/out/index.html: web/node_modules/.package-lock.json $(WEB_SRC)
	@command -v npm >/dev/null || { echo "make install: skipping the web app (no Node.js); see above"; exit 0; }
	cd web && NEXT_TELEMETRY_DISABLED=1 npx --no-install next build >/dev/null
	@touch $@

install: $(VENV)/.synced web/out/index.html
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
