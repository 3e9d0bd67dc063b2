# Everything runs from the repository's own virtual environment (.venv/).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench faults schemas mutants clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gateway demo --dossiers 2000 --report demo-report.json

# The official AsyncAPI parser and Ajv (tests/tools/asyncapi-check.mjs), from the lock file.
TOOLS := tests/tools/node_modules/.package-lock.json
$(TOOLS): tests/tools/package-lock.json
	npm ci --prefix tests/tools --no-audit --no-fund

test: $(STAMP) $(TOOLS)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

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
# needs no entry; the full log is mutants/run.log.
MUTANT_CHILDREN ?= 2

mutants: $(STAMP)
	rm -rf mutants
	mkdir -p mutants
	printf '*\n' > mutants/.gitignore
	nice -n 10 $(BIN)/mutmut run --max-children $(MUTANT_CHILDREN) > mutants/run.log 2>&1 \
		|| { tail -n 40 mutants/run.log; exit 1; }
	@$(BIN)/mutmut results --all true | awk -F': ' ' \
		{ name = $$1; sub(/^ +/, "", name); module = name; sub(/\.[^.]*$$/, "", module); \
		  total[module]++; count[module, $$2]++; \
		  if ($$2 != "killed" && $$2 != "timeout") print "survivor (" $$2 "): " name } \
		END { print ""; printf "%-28s %7s %7s %8s %7s\n", "module", "mutants", "killed", "timeout", "score"; fflush(); \
		  for (m in total) { k = count[m, "killed"] + count[m, "timeout"]; \
		    printf "%-28s %7d %7d %8d %6.1f%%\n", m, total[m], count[m, "killed"], count[m, "timeout"], \
		      100 * k / total[m] | "sort" }; close("sort") }'

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache mutants
