# Two commands on a fresh machine: `make run` serves the API, `make test` runs the tests.
# Both install what they need into .venv on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test lint format openapi openapi-check migrate bench clean chromium

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP) ## create .venv and install the ledger (the `ledger` command lands in .venv/bin)

run: $(STAMP) ## serve the API on LEDGER_HOST:LEDGER_PORT (embedded PostgreSQL unless LEDGER_DATABASE_URL)
	$(BIN)/ledger serve

test: $(STAMP) chromium ## run the test suite (LEDGER_TEST_DATABASE_URL, else Docker, else embedded PostgreSQL)
	$(BIN)/pytest $(PYTEST_ARGS)

chromium: ## install Debian's chromium if missing (the /ui test drives it; needs root)
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }
	@command -v chromium

lint: $(STAMP) ## ruff (lint and format check) and mypy --strict
	$(BIN)/ruff check src tests migrations bench examples
	$(BIN)/ruff format --check src tests migrations bench examples
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests migrations bench examples
	$(BIN)/ruff format src tests migrations bench examples

openapi: $(STAMP) ## regenerate openapi/v1.json from the code
	$(BIN)/python -m ledger.api.openapi > openapi/v1.json

migrate: $(STAMP) ## apply database migrations (same database resolution as `make run`)
	$(BIN)/ledger migrate

bench: $(STAMP) ## benchmarks beside raw asyncpg baselines (QUICK=1 for a short run); writes bench/results.json
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

clean: ## remove .venv and caches (keeps .ledger, the embedded database's data)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache src/*.egg-info
