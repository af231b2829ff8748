# The front door (CONVENTIONS §15): CI runs these same targets.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: install run test test-postgres lint typecheck format bench bench-quick chaos clean

$(PY):
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "distdb needs Python 3.11+"'
	@$(PYTHON) -m venv $(VENV) || { echo "venv failed; on Debian: apt-get install python3-venv"; exit 1; }

install: $(PY)  ## create .venv and install the pinned dependencies
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@echo "installed: $$($(PY) --version), Django $$($(PY) -c 'import django; print(django.get_version())')"

run: $(PY)  ## run the whole local cluster (Ctrl-C stops it)
	$(PY) manage.py runcluster $(ARGS)

test: $(PY)  ## the whole suite (unit + integration) on SQLite
	$(PY) -m pytest

test-postgres: $(PY)  ## the database-facing tests again on PostgreSQL (DISTDB_DATABASE_URL)
	$(PY) -m pytest -m "postgres"

lint: $(PY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(PY)  ## mypy (django-stubs, pydantic plugins) on distdb/ and the services; see pyproject.toml
	$(VENV)/bin/mypy

format: $(PY)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(PY)  ## the benchmark on a fresh local cluster; PROFILE=1 adds py-spy profiles
	$(PY) -m bench $(if $(PROFILE),--profile) $(BENCH_ARGS)

bench-quick: $(PY)  ## the same workloads, small: under 3 minutes
	$(PY) -m bench --quick $(if $(PROFILE),--profile) $(BENCH_ARGS)

chaos: $(PY)  ## the fault harness: DURATION=s SEED=n NEMESIS=kill,pause,db_lock,move,rebalance,partition,clock
	$(PY) -m chaos --duration $(or $(DURATION),180) $(if $(SEED),--seed $(SEED)) $(if $(NEMESIS),--nemesis $(NEMESIS)) $(CHAOS_ARGS)

clean:
	rm -rf var .pytest_cache .ruff_cache
