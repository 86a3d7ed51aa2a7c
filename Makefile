# The two commands of the README work on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install install-dev demo test lint bench clean

install:
	$(PIP) install -q -e .

install-dev:
	$(PIP) install -q -e '.[dev]'
	bash .ci/postgres.sh
	bash .ci/azurite.sh
	bash .ci/wan.sh
	bash .ci/clients.sh

# The main job on embedded defaults: an fs:// source and two zone clusters on loopback, the
# two-zone scenario (scheduled sync, out-of-band change, peer-first read, checkpoint), a report.
demo: install
	$(PYTHON) -m aisync demo

lint: install-dev
	$(PYTHON) -m ruff check aisync tests benchmarks migrations
	lint-imports

# Everything CI runs: lint, layering contracts, and the whole test suite (real node processes,
# SQLite and a throwaway PostgreSQL).
test: lint
	$(PYTHON) -m pytest -q

# Warm-GET benchmark against nginx (needs nginx and wrk: apt-get install -y nginx wrk).
bench: install
	@command -v wrk >/dev/null && command -v nginx >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq nginx wrk)
	$(PYTHON) benchmarks/bench_get.py

clean:
	rm -rf .aisync-cluster .pytest_cache .ruff_cache *.egg-info
