# boltzgen: `make run` runs the default job, `make test` the test suite.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,plot]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/boltzgen run --force --out runs/out/default.h5

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check boltzgen tests benchmarks
	$(BIN)/ruff format --check boltzgen tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput_flows.py
	$(BIN)/python benchmarks/mcmc_reference.py

clean:
	rm -rf $(VENV) runs/out
