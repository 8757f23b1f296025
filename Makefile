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

# `make bench` runs every benchmark (about 30 minutes); `make bench BENCH=drain` one of them,
# with BENCH_ARGS passed on (e.g. BENCH=drain BENCH_ARGS="--repeat 3").
BENCH ?= ingest drain footprint decisions ledger_step
BENCH_ARGS ?=

bench: $(VENV)/.installed-test
	@scripts/system-packages test
	@for name in $(BENCH); do \
		echo "== bench/$$name.py $(BENCH_ARGS)"; \
		$(BIN)/python bench/$$name.py $(BENCH_ARGS) || exit 1; \
	done

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
