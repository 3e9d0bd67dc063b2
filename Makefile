# Everything runs from the repository's own virtual environment (.venv/).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lock demo test slow lint bench faults schemas mutants clean

# Every install is pinned, with hashes, by the lock files `make lock` generates from pyproject.toml:
#   requirements.lock        production dependencies only: what the Docker image installs
#   requirements-dev.lock    those same pins + the embedded broker ([embedded]) + [dev] + the build backend:
#                            what .venv gets (make install, and so make demo and make test)
#   requirements-build.lock  the build backend alone: what the image's build stage makes the wheel with
# The project itself goes in afterwards without dependencies, so nothing unpinned slips in.
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
BUILD_LOCK := requirements-build.lock

$(STAMP): pyproject.toml $(LOCK) $(DEV_LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r $(DEV_LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e '.[dev]'
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

# Regenerate the lock files after changing pyproject.toml's dependencies; existing pins are kept where they
# still fit (`make lock LOCK_ARGS=--upgrade` moves everything to the newest releases, or
# `LOCK_ARGS='--upgrade-package aiohttp'` one package). With pip-tools in a venv of its own, from PyPI only
# (no local pip configuration or find-links), for CPython 3.11 on Linux: the image's Python.
LOCK_TOOLS := $(VENV)/.lock-tools
LOCK_ARGS ?=
PIP_COMPILE := env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
	$(LOCK_TOOLS)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	--no-emit-find-links $(LOCK_ARGS)

lock:
	@$(PY) -c 'import sys; sys.exit(None if sys.version_info[:2] == (3, 11) else "make lock: needs CPython 3.11, the image'"'"'s Python (PY=python3.11)")'
	test -x $(LOCK_TOOLS)/bin/pip-compile || { $(PY) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/pip install -q pip-tools==7.6.2; }
	$(PIP_COMPILE) --output-file $(LOCK) pyproject.toml
	$(PIP_COMPILE) --extra dev --all-build-deps --constraint $(LOCK) --output-file $(DEV_LOCK) pyproject.toml
	$(PIP_COMPILE) --only-build-deps --build-deps-for wheel --constraint $(DEV_LOCK) --output-file $(BUILD_LOCK) pyproject.toml

demo: $(STAMP)
	$(BIN)/gateway demo --dossiers 2000 --report demo-report.json

# The official AsyncAPI parser and Ajv (tests/tools/asyncapi-check.mjs), from the lock file.
TOOLS := tests/tools/node_modules/.package-lock.json
$(TOOLS): tests/tools/package-lock.json
	npm ci --prefix tests/tools --no-audit --no-fund

# The suite waits on brokers, partners and databases far more than it computes: four pytest-xdist workers (each
# with its own embedded broker) finish it in about a third of the serial time even on two cores. TEST_WORKERS=0
# runs it serially (one process: easier to read a failure). Tests go to the workers one at a time, the slowest
# first (tests/durations.py), so no long test starts last. The 15 slowest are listed at the end: CI must stay
# under 20 minutes, and that list says where its time goes.
TEST_WORKERS ?= 4
test: $(STAMP) $(TOOLS)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q -m "not slow" -n $(TEST_WORKERS) --maxschedchunk 1 --durations=15

# The tests marked slow (pyproject: a second backend of a runner, a child killed from outside, demos that must
# fail): guarantees `make test` already proves once, at a cost CI's 20 minutes cannot carry.
slow: $(STAMP) $(TOOLS)
	$(BIN)/pytest -q -m slow -n $(TEST_WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

schemas: $(STAMP)
	$(BIN)/python -m contracts.export

bench: $(STAMP)
	$(BIN)/python -m bench.run

# The whole fault matrix (every injection point x raise/crash x SQLite/PostgreSQL, docs/testing.md); its
# table goes to stderr and its figures into bench/results.json. `make test` runs a fast part of it.
faults: $(STAMP)
	$(BIN)/python -m bench.run --only faults

# Mutation testing of the core modules ([tool.mutmut] in pyproject.toml, docs/testing.md): every mutant
# the tests let live is listed, then a score per module. Niced and two workers by default (the machine is
# shared); MUTANT_CHILDREN=1 for a quieter run. mutants/ ignores itself, so the repository's .gitignore
# needs no entry; the full log is mutants/run.log. MUTANTS='gateway.pipeline*' mutates one part only (names
# match with wildcards; the report then lists only the modules it ran).
MUTANT_CHILDREN ?= 2
MUTANTS ?=

mutants: $(STAMP)
	rm -rf mutants
	mkdir -p mutants
	printf '*\n' > mutants/.gitignore
	nice -n 10 $(BIN)/mutmut run --max-children $(MUTANT_CHILDREN) $(foreach m,$(MUTANTS),'$(m)') > mutants/run.log 2>&1 \
		|| { tail -n 40 mutants/run.log; exit 1; }
	@$(BIN)/mutmut results --all true | awk -F': ' ' \
		$$2 == "not checked" { next } \
		{ name = $$1; sub(/^ +/, "", name); module = name; sub(/\.[^.]*$$/, "", module); \
		  total[module]++; count[module, $$2]++; \
		  if ($$2 != "killed" && $$2 != "timeout") print "survivor (" $$2 "): " name } \
		END { print ""; printf "%-28s %7s %7s %8s %7s\n", "module", "mutants", "killed", "timeout", "score"; fflush(); \
		  for (m in total) { k = count[m, "killed"] + count[m, "timeout"]; \
		    printf "%-28s %7d %7d %8d %6.1f%%\n", m, total[m], count[m, "killed"], count[m, "timeout"], \
		      100 * k / total[m] | "sort" }; close("sort") }'

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache mutants
