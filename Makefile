# The two set-up commands: `make demo` and `make test`. Both work on a fresh Debian 12
# machine as root (they apt-get install what is missing) and create .venv themselves.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck unit bench clean

demo: $(VENV)/.installed
	@scripts/system-packages demo
	$(BIN)/postedge demo $(DEMO_ARGS)

test: $(VENV)/.installed-test
	@scripts/system-packages test
	$(MAKE) --no-print-directory lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

bench: $(VENV)/.installed-test
	@scripts/system-packages test
	$(BIN)/python bench/ingest.py

$(VENV)/.venv-created:
	@scripts/system-packages demo
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.venv-created
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.venv-created
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
