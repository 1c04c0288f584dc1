# Two entry points a new user needs: `make demo` (the main job) and `make test`.
# Both create .venv on first use and reuse it afterwards (re-installed when setup.cfg changes).
# Tests run in two xdist workers with one OpenMP thread each: oversubscribed OpenMP threads
# made the suite ~100x slower on 2 cores.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test test-all bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev,weights,android]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mzoo demo

test: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/python -m pytest -n 2 --dist worksteal -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/python -m pytest -n 2 --dist worksteal $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python bench/latency.py

clean:
	rm -rf $(VENV) build *.egg-info
