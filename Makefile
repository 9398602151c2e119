# Two commands on a fresh machine:  `make demo` (run a real job on the local grid), `make test`.
VENV := .venv
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup setup-tests demo test down

setup:
	./scripts/setup.sh

setup-tests:
	./scripts/setup.sh --with-tests

demo: setup
	$(VENV)/bin/rgrid run examples/wordcount.py examples/data/book.txt --top 5

down:
	$(VENV)/bin/rgrid local down

test: setup-tests
	$(VENV)/bin/python -m pytest -ra $(PYTEST_ARGS)
