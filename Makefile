# Two entry points for a fresh machine: `make run` and `make test`. Both build .venv from requirements.lock.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
UV_VERSION := 0.13.9
export DO_NOT_TRACK := 1

.PHONY: install run test check lint format clean lock

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

run: install
	$(BIN)/lifecycle run

test: install
	$(BIN)/pytest

check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy config pipeline data models serving monitoring bench

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Re-resolve the pinned set after editing requirements.in.
lock: install
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements.in -o requirements.lock

clean:
	rm -rf var reports artifacts data/raw data/labeled data/prepared .pytest_cache .mypy_cache .ruff_cache
