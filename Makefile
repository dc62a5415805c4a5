# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_CUSTOMERS ?= 100000
DEMO_DATA ?= data/demo
MODELS ?= models
HOST ?= 127.0.0.1
PORT ?= 8000
STATE ?= var

export OPENBLAS_NUM_THREADS := 1

.PHONY: demo test install browser java postgres bench-tools clean

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
	$(BIN)/nbo db upgrade --state $(STATE)
	$(BIN)/nbo keys create --role teller --name "make demo" --state $(STATE)
	$(BIN)/nbo serve --data $(DEMO_DATA) --models $(MODELS) --state $(STATE) \
		--host $(HOST) --port $(PORT)

# Debian's Chromium and ChromeDriver for the teller console's end-to-end tests (selenium),
# and a small Chinese font for its screenshot; installed when missing (apt-get, with sudo
# unless root). Under `make test` those tests fail, rather than skip, without the browser.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || \
			! fc-list :lang=zh 2>/dev/null | grep -q .; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "installing chromium, chromium-driver and a Chinese font for the end-to-end tests"; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq chromium chromium-driver fonts-wqy-microhei; \
	fi

# A headless Java runtime for pyspark (the Spark tests and `--engine spark` on one machine),
# installed when java is missing (apt-get, with sudo unless root).
java:
	@if ! command -v java >/dev/null 2>&1; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "installing a headless Java runtime for pyspark"; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq default-jre-headless; \
	fi

# PostgreSQL's server binaries (initdb, pg_ctl) for the store tests, which start a throwaway
# server of their own (tests/postgres_server.py), and for bench_serving.py --database
# postgresql; installed when missing (apt-get, with sudo unless root).
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && \
			! command -v initdb >/dev/null 2>&1; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "installing PostgreSQL's server for the store tests"; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq postgresql; \
	fi

# What the benchmarks in scripts/ need: the venv, and wrk for bench_serving.py (Debian's, with
# the LuaJIT that scripts/wrk_offers.lua runs in), installed when missing (apt-get, with sudo
# unless root). Without them a benchmark stops at once with one line naming this target.
bench-tools: install
	@if ! command -v wrk >/dev/null 2>&1; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "installing wrk for scripts/bench_serving.py"; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq wrk; \
	fi

# The whole suite with the machine's own BLAS kernel and SIMD, then the tests that compare
# two code paths (marked numerics) under each other OpenBLAS kernel this CPU can run and
# with numpy's SIMD dispatch off (tests/kernels.py): a result must not depend on the CPU.
test: install browser java postgres
	NBO_REQUIRE_BROWSER=1 NBO_REQUIRE_SPARK=1 NBO_REQUIRE_POSTGRES=1 $(BIN)/python -m pytest
	$(BIN)/python tests/kernels.py

clean:
	rm -rf $(VENV) data/demo $(MODELS)/*/ $(MODELS)/current .pytest_cache
