# trimdm: the two set-up commands. Both create or reuse .venv, install the project, and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the project definition changes (editable install: code changes need nothing).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/trimdm demo --out runs/demo

# Tests are single-threaded (tests/conftest.py), so one worker per core, up to four, runs them side by side.
test: $(STAMP)
	$(BIN)/python -m pytest tests -n auto --maxprocesses=4

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf runs data .pytest_cache
