# The two commands of the README: `make serve` and `make test`. Each sets everything up first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup serve test lint format

# Installs the package (editable) with its pinned dependencies, the test tools and Ray Serve
# (tests/ray_serve runs imagine on it) into .venv; re-runs only when pyproject.toml changes.
$(BIN)/imagine: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,ray]'
	touch $(BIN)/imagine

setup: $(BIN)/imagine

serve: setup
	$(BIN)/imagine serve --host $(HOST) --port $(PORT)

test: setup
	bash scripts/test-deps.sh
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/pytest -q --durations=15

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
