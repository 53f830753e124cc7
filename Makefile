# make bench: run every benchmark (benchmarks/) and write docs/PERFORMANCE.md (about 10 minutes on 2 CPU cores)
# make test:  install what the tests need, then run them (scripts/test)
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)

.PHONY: bench test

bench:
	$(PYTHON) -m benchmarks $(BENCH_ARGS)

test:
	scripts/test $(TEST_ARGS)
