# trimdm: the two set-up commands. Both create or reuse .venv, install the project, and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test install clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the project definition changes (editable install: code changes need nothing).
# The demo needs the runtime dependencies only; the tests add the `dev` extra (lm-eval, transformers,
# diffusers, datasets, selenium: about 40 s more of install on a fresh machine).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP) $(DEV_STAMP)

install: $(DEV_STAMP)

demo: $(STAMP)
	$(BIN)/trimdm demo --out runs/demo

# Tests are single-threaded (tests/conftest.py), so one worker per core, up to four, runs them side by side.
test: $(DEV_STAMP)
	$(BIN)/python -m pytest tests -n auto --maxprocesses=4

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf runs data .pytest_cache
