# The two commands a newcomer runs: `make run` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Test files run on this many parallel workers (each with its own database and Redis
# db); most tests wait on servers and processes, not on a core.
TEST_WORKERS ?= 4

.PHONY: run test lint bench bench-e2e bench-history bench-precision openapi clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Cronbeat needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	@echo "make: installing Cronbeat and its pinned dependencies into $(VENV) (first run only)"
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off -c constraints.txt -e '.[test,embedded]'
	touch $(STAMP)

## Start web, worker, dispatcher and beat (embedded PostgreSQL and Redis unless DATABASE_URL/REDIS_URL are set).
run: $(STAMP)
	$(PY) -m devrun

## Run the whole test suite against real PostgreSQL and Redis.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not serial"
	$(PY) -m pytest -m serial

lint: $(STAMP)
	$(VENV)/bin/ruff check .

## Regenerate openapi.json from the code (a test fails when it drifts).
openapi: $(STAMP)
	$(VENV)/bin/cronbeat openapi > openapi.json

bench: $(STAMP)
	$(PY) -m bench.dispatch

## Benchmark (not a test): N webhook triggers end to end against plain Celery tasks doing requests.post.
bench-e2e: $(STAMP)
	$(PY) -m bench.e2e

## Benchmark (not a test): how late one-time and interval runs start, against apply_async(eta=...).
bench-precision: $(STAMP)
	$(PY) -m bench.precision

## Benchmark (not a test): a list page of 50 triggers with 10,000 invocations each against none; history size.
bench-history: $(STAMP)
	$(PY) -m bench.history

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
