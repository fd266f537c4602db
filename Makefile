# Developer shortcuts. The README's quick start is the source of truth.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install test lint typecheck bench format

install:
	installer/install.sh --dev

test: install
	$(PY) -m pytest

lint:
	$(VENV)/bin/ruff check appliance tests bench
	$(VENV)/bin/ruff format --check appliance tests bench

format:
	$(VENV)/bin/ruff format appliance tests bench
	$(VENV)/bin/ruff check --fix appliance tests bench

typecheck:
	$(VENV)/bin/mypy

bench:
	$(PY) bench/llm.py
	$(PY) bench/embed.py
	$(PY) bench/extract.py
