# Two set-up commands (see README): `make demo` runs the product on embedded defaults, `make test` the tests.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_HOME ?= $(or $(AUTOTRADE_HOME),$(CURDIR)/var)/prefect

.PHONY: install test test-pg lint typecheck bench demo clean mutation

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Idempotent: uv sync does nothing when .venv already matches uv.lock.
$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet --compile-bytecode
	$(VENV)/bin/python -m compileall -q -j 0 autotrade flows tasks blocks deployments >/dev/null
	@touch $@

# The web app (web/, Next.js static export served by `autotrade api serve` at /): rebuilt only when a file
# under web/ changed. It needs Node.js 18+ and npm; without them the API still runs, and this says so.
WEB_SRC := $(shell find web -path web/node_modules -prune -o -path web/.next -prune -o -path web/out -prune \
	-o -type f ! -name next-env.d.ts -print 2>/dev/null)
web/node_modules/.package-lock.json: web/package-lock.json
	@if command -v npm >/dev/null; then cd web && NEXT_TELEMETRY_DISABLED=1 npm ci --no-audit --no-fund \
		--loglevel=error; else echo "make install: npm not found: install Node.js 18+ and npm (apt-get install \
		nodejs npm) to build the web app (web/); the API runs without it"; fi

web/out/index.html: web/node_modules/.package-lock.json $(WEB_SRC)
	@if command -v npm >/dev/null; then echo "building the web app (web/ -> web/out)"; cd web && \
		NEXT_TELEMETRY_DISABLED=1 npx --no-install next build >/dev/null && touch out/index.html; \
		else echo "make install: skipping the web app (no Node.js)"; fi

install: $(VENV)/.synced web/out/index.html
	@mkdir -p "$(PREFECT_HOME)"

# Two workers (the machine's two cores); the tests that run Prefect servers stay together on one of them
# (tests/conftest.py). TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: install
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup

# Five trading days for five users on the simulator; options: make demo ARGS="--days 3 --users 2 --json"
demo: install
	$(VENV)/bin/autotrade demo $(ARGS)

test-pg: install
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup -m postgres

lint: install
	$(VENV)/bin/ruff check autotrade flows tasks blocks deployments tests bench
	$(VENV)/bin/mypy autotrade

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done

# Mutation testing (mutmut, configured in pyproject.toml) of autotrade/domain/ and autotrade/trading/orders.py
# against tests/unit, in a scratch copy under var/ (nice -n 10, two workers, stopped after MUTATION_TIMEOUT
# seconds). The last line is JSON: killed, survived, score (percent of mutants killed; timeouts count as killed),
# overall and for autotrade/domain/ alone; the lines before it name the surviving mutants.
MUTATION_TIMEOUT ?= 1800
define MUTATION_SUMMARY
import json, sys
status = dict(line.strip().rsplit(": ", 1) for line in sys.stdin if ": " in line)
def count(prefix):
    mine = {n: s for n, s in status.items() if n.startswith(prefix)}
    killed = sum(s in ("killed", "timeout", "caught by type check") for s in mine.values())
    survived = sorted(n for n, s in mine.items() if s == "survived")
    return mine, killed, survived
every, killed, survived = count("")
domain, d_killed, d_survived = count("autotrade.domain.")
print("\n".join("survived: " + n for n in survived))
untested = sum(s == "no tests" for s in every.values())
print(json.dumps({"mutants": len(every), "killed": killed, "survived": len(survived), "no_tests": untested,
                  "score": round(100 * killed / max(len(every), 1), 1),
                  "domain": {"mutants": len(domain), "killed": d_killed, "survived": len(d_survived),
                             "score": round(100 * d_killed / max(len(domain), 1), 1)}}))
endef
export MUTATION_SUMMARY
mutation: install
	rm -rf var/mutation && mkdir -p var/mutation
	cp -r autotrade tests pyproject.toml var/mutation/
	cd var/mutation && nice -n 10 timeout $(MUTATION_TIMEOUT) ../../$(VENV)/bin/mutmut run --max-children 2 \
		> run.log 2>&1 || { tail -c 2000 run.log; exit 1; }
	@cd var/mutation && ../../$(VENV)/bin/mutmut results --all true 2>/dev/null | ../../$(VENV)/bin/python -c "$$MUTATION_SUMMARY"

clean:
	rm -rf $(VENV) $(TOOLS) var .pytest_cache .mypy_cache .ruff_cache
