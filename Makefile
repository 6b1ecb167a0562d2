# ClassMood: `make run` installs and starts the app; `make test` installs and runs every test layer.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8501

.PHONY: run test test-fast lint bench clean-venv

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed
	$(PY) -m streamlit run dashboard.py --server.port $(PORT)

test: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m pytest

test-fast: $(VENV)/.installed-dev
	$(PY) -m pytest -m "not slow and not browser"

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .

bench: $(VENV)/.installed
	$(PY) -m fer_core.bench

clean-venv:
	rm -rf $(VENV)
