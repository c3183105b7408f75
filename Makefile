# carebase: two commands from a fresh clone with only python3 — `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench bench-search format clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,dev,spark,ml-shap,ml-data]"
	touch $(STAMP)

## demo: install, build the synthetic demo data set (once) and its logins, serve on
## http://127.0.0.1:8080 (FHIR at /fhir); DEMO_PATIENTS sets the population size
DEMO_PATIENTS ?= 1000
demo: $(STAMP)
	$(VENV)/bin/carebase demo --patients $(DEMO_PATIENTS) --host 127.0.0.1 --port 8080

## test: the whole suite, on SQLite and PostgreSQL, in TEST_WORKERS processes (pytest-xdist;
## each test file runs whole in one process, each process has its own PostgreSQL schema)
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

## lint: ruff and mypy must be clean
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests tools bench
	$(VENV)/bin/ruff format --check src tests tools bench
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format src tests tools bench
	$(VENV)/bin/ruff check --fix src tests tools bench

## bench: benchmarks; figures go to docs/benchmarks.md
bench: $(STAMP)
	$(PY) bench/run_all.py

## bench-search: search at 1,000,000 resources (builds the dataset once, under BENCH_DATA)
BENCH_DATA ?= /work/bench-data
bench-search: $(STAMP)
	$(PY) bench/search_dataset.py --data-dir $(BENCH_DATA)
	$(PY) bench/bench_search.py --data-dir $(BENCH_DATA)

clean:
	rm -rf $(VENV) carebase-data .pytest_cache .mypy_cache .ruff_cache
