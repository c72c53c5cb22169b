# Kodori: `make run` starts everything on this machine; `make test` runs the whole suite.
# Both create .venv and install what they need first. PYTHON may name another interpreter (3.11+).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint install clean-state fmt

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m kodori.devtools.run

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/vulture
	$(BIN)/lint-imports
	DJANGO_ENV=test $(BIN)/python manage.py makemigrations --check --dry-run

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Forget make run's private database, Redis, blobs and secrets (asks first).
clean-state:
	@read -p "Delete .kodori/ (demo data, keys and blobs)? [y/N] " answer; [ "$$answer" = y ] && rm -rf .kodori || true
