# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_CUSTOMERS ?= 100000
DEMO_DATA ?= data/demo
MODELS ?= models
HOST ?= 127.0.0.1
PORT ?= 8000

export OPENBLAS_NUM_THREADS := 1

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/nbo demo-data --customers $(DEMO_CUSTOMERS) --out $(DEMO_DATA)
	$(BIN)/nbo train --data $(DEMO_DATA) --models $(MODELS)
	$(BIN)/nbo serve --data $(DEMO_DATA) --models $(MODELS) --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) data/demo $(MODELS)/*/ $(MODELS)/current .pytest_cache
