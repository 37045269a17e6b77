# bsnn-hw: `make demo` sets up and runs the whole flow; `make test` sets up and runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_WORKERS ?= 2
DEMO   ?= demo

.PHONY: setup demo test test-slow bench clean

setup: $(VENV)/.installed

# torch is installed first and pinned: a CPU wheel of 2.13.0 is what pip should take (unpinned pulls CUDA builds).
$(VENV)/.installed: pyproject.toml scripts/setup-system.sh
	./scripts/setup-system.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $@

demo: setup
	PATH="$(abspath $(BIN)):$$PATH" ./scripts/demo.sh $(DEMO)

test: setup
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal -q

test-slow: setup
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal -q -m slow

bench: setup
	$(BIN)/python bench/golden_speed.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis $(DEMO)
