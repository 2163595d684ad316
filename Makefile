# ptune developer entry points. `make demo` and `make test` install first when needed.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test demo lint format bench clean

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==23.2.1
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/ptune info --gin_file=models/t5_1_1_tiny.gin

lint: $(STAMP)
	$(BIN)/ruff check ptune tasks tests benchmarks
	$(BIN)/ruff format --check ptune tasks tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format ptune tasks tests benchmarks

bench: $(STAMP)
	@echo "benchmarks: not yet implemented" && exit 1

clean:
	rm -rf $(VENV) build dist *.egg-info
