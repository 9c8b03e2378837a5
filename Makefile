# prefect-atlas developer commands. Needs only python3 (>= 3.11) and make: the first target
# that needs the virtualenv creates it and installs the package with every extra and the
# dev tools.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Keep the repo's demo state inside the clone (`make clean` removes it).
export ATLAS_HOME ?= $(CURDIR)/.atlas-home
export PREFECT_HOME ?= $(CURDIR)/.prefect-home
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: help install demo test test-ui lint typecheck bench docs clean

help:
	@echo "make demo   - run the Atlas demo on embedded defaults (no server, no credentials)"
	@echo "make test   - run the test suite (real PostgreSQL, Prefect server, emulators)"
	@echo "make test-ui - the blocks' forms in Prefect's UI, in headless Chromium (/usr/bin/chromium)"
	@echo "make lint   - ruff check, ruff format --check and mypy --strict"
	@echo "make bench  - benchmarks side by side with the reference libraries"
	@echo "make docs   - build the documentation site (guide + API reference) into site/, offline"
	@echo "make clean  - remove the virtualenv and local demo state"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[all]" --group dev
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	@mkdir -p "$(PREFECT_HOME)" "$(ATLAS_HOME)"
	$(BIN)/prefect-atlas demo

test: $(STAMP)
	$(BIN)/python -m pytest

# Needs Debian's chromium (/usr/bin/chromium, or ATLAS_UI_CHROMIUM); Playwright comes with the
# dev tools. ATLAS_UI_SCREENSHOTS=docs/images refreshes the screenshots in the docs.
test-ui: $(STAMP)
	$(BIN)/python -m pytest -m ui tests/ui

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check prefect_atlas tests bench flows
	$(BIN)/mypy

# The event log at scale fills its own database first (10 million events unless told:
# `make bench BENCH_SCALE_ARGS="--events 1000000"`, or `--database-url` for a server of yours).
BENCH_SCALE_ARGS ?=

bench: $(STAMP)
	@for script in bench/[a-z]*.py; do \
		if [ $$script = bench/events_scale.py ]; then continue; fi; \
		echo "== $$script"; $(BIN)/python $$script || exit 1; done
	@echo "== bench/events_scale.py $(BENCH_SCALE_ARGS)"
	$(BIN)/python bench/events_scale.py $(BENCH_SCALE_ARGS)

# Offline and strict: a broken link or cross-reference fails the build.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) .atlas-home .prefect-home .mypy_cache .ruff_cache .pytest_cache build dist site
