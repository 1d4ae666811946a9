# Two commands do all the set-up on a fresh machine:
#   make run    serves the API on http://127.0.0.1:8000 on the embedded default
#   make test   runs the whole test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format typecheck bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python requirements.txt requirements-dev.txt pyproject.toml
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mlops serve

test: $(STAMP)
	$(BIN)/python -m pytest tests

lint: $(STAMP)
	$(BIN)/ruff check src tests migrations bench
	$(BIN)/ruff format --check src tests migrations bench

format: $(STAMP)
	$(BIN)/ruff format src tests migrations bench
	$(BIN)/ruff check --fix src tests migrations bench

typecheck: $(STAMP)
	$(BIN)/mypy src

bench: $(STAMP)
	$(BIN)/python -m bench

# Re-resolve the pinned sets from pyproject.toml in a scratch venv.
lock:
	rm -rf /tmp/mlops-lock && $(PYTHON) -m venv /tmp/mlops-lock
	/tmp/mlops-lock/bin/pip install --quiet --upgrade pip
	/tmp/mlops-lock/bin/pip install --quiet .
	( echo "# Runtime dependencies, pinned (the whole closure). Regenerate with 'make lock'."; \
	  /tmp/mlops-lock/bin/pip freeze --exclude mlops ) > requirements.txt
	/tmp/mlops-lock/bin/pip install --quiet '.[dev]'
	( echo "# Development and test tools, pinned, on top of the runtime set. Regenerate with 'make lock'."; \
	  echo "-r requirements.txt"; \
	  /tmp/mlops-lock/bin/pip freeze --exclude mlops | grep -vxFf requirements.txt ) > requirements-dev.txt

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
