# One-command habits. Every target creates .venv and installs what it needs first.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# One virtualenv, two install levels, a stamp each: the runtime (what `make serve` needs) and
# the dev extras on top (tests, lint, type checks, benchmarks). `make test` after `make serve`
# only adds the dev extras; `make serve` after `make test` installs nothing.
RUNTIME_STAMP := $(VENV)/.runtime-stamp
DEV_STAMP := $(VENV)/.dev-stamp
HOST ?= 127.0.0.1
PORT ?= 8000
export LABELWISE_DATA_DIR ?= ./data

.PHONY: serve test lint format openapi bench clean

$(RUNTIME_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==25.3"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $(RUNTIME_STAMP)

$(DEV_STAMP): $(RUNTIME_STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(DEV_STAMP)

## serve: migrate the database (SQLite in ./data unless LABELWISE_DATABASE_URL is set) and start the API
serve: $(RUNTIME_STAMP)
	$(BIN)/labelwise migrate
	$(BIN)/labelwise serve --host $(HOST) --port $(PORT)

## test: the whole suite on SQLite, and on PostgreSQL too when LABELWISE_TEST_POSTGRES_URL is set
## (the redocly and TypeScript-client tests need node and npm: skipped without, failed on CI)
## (the browser tests, tests/e2e/test_browser.py and test_web_app.py, need Debian's chromium: skipped without)
## (two pytest workers, one test file each at a time: the suite waits on servers and jobs as
## much as it computes; `make test PYTEST_WORKERS=0` runs it in one process)
PYTEST_WORKERS ?= 2
test: $(DEV_STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=25 --cov --cov-report=term --cov-fail-under=85

## lint: ruff (lint + format check) and mypy --strict on app/, tests/ and bench/
lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## openapi: write openapi/openapi.json (sorted keys, 2-space indent) and docs/errors.md (from app/errors.py)
openapi: $(DEV_STAMP)
	$(BIN)/labelwise openapi --output openapi/openapi.json
	$(BIN)/labelwise errors-doc --output docs/errors.md

## bench: the benchmarks in bench/; figures go to docs/benchmarks.md by hand
bench: $(DEV_STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/registry.py
	$(BIN)/python bench/batches.py
	$(BIN)/python bench/active_learning.py
	$(BIN)/python bench/completion.py
	$(BIN)/python bench/learn_faster.py
	$(BIN)/python bench/agreement.py
	$(BIN)/python bench/label_issues.py
	$(BIN)/python bench/import_jsonl.py
	$(BIN)/python bench/export.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/faults.py
	$(BIN)/python bench/request_cost.py
	$(BIN)/python bench/webhooks.py
	$(BIN)/python bench/team.py
	$(BIN)/python bench/model_speed.py
	$(BIN)/python bench/handsoff.py --svg docs/handsoff-curves.svg

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage clients/typescript/node_modules
