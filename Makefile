# Quik.day Realtime — the developer commands. The two that matter: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile

.PHONY: help venv venv-prod constraints test test-latest run serve dev bench bench-quick mutate chaos lint fmt clean
.DEFAULT_GOAL := help

help:  ## this list (`make` alone shows it too)
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-z][a-z -]*:[^=]*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Production's packages only (what `make run` needs): requirements.txt pins every one of them,
# so this is exactly what a buildpack's plain `pip install -r requirements.txt` installs.
$(BIN)/.installed-prod: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	touch $@

# What README's examples need beyond production's packages: the `websockets` client of
# "Watch a run live over a WebSocket" (its version from constraints.txt), so that they
# work right after `make run`. Production never installs it.
$(BIN)/.installed-examples: $(BIN)/.installed-prod
	$(PIP) -c constraints.txt websockets
	touch $@

# And the tests' and tools' (requirements-dev.txt starts with requirements.txt; constraints.txt
# pins the tools' own dependencies).
$(BIN)/.installed: $(BIN)/.installed-prod requirements-dev.txt constraints.txt
	$(PIP) -c constraints.txt -r requirements-dev.txt
	touch $@

venv-prod: $(BIN)/.installed-prod  ## production's packages only, in .venv

venv: $(BIN)/.installed  ## production's packages plus the tests' and tools'

# The direct dependencies without their pins: pip keeps every installed version that satisfies
# them and adds what is new (at its newest release that fits the rest).
DIRECT_REQUIREMENTS = -r requirements.in $$(sed -e 's/\#.*//' -e '/^ *-r /d' requirements-dev.txt)
# After editing requirements.in or requirements-dev.txt (UPGRADE="pkg ...": to those packages'
# newest releases first): install what changed, then pin every installed package of the closure
# in requirements.txt (production) and constraints.txt (production, tests and tools). Then make test.
constraints: venv  ## after editing requirements.in / requirements-dev.txt (UPGRADE="pkg ..." to bump): re-pin requirements.txt and constraints.txt
	$(if $(UPGRADE),$(PIP) --upgrade $(UPGRADE))
	$(PIP) $(DIRECT_REQUIREMENTS)
	$(BIN)/python .ci/constraints.py

# The suite on TEST_WORKERS pytest-xdist processes (docs/testing.md: each has its own test
# database, Redis db — REDIS_URL's and the next ones — queue, ports and metrics); 0 runs it in one.
# Most tests wait on Daphne, Celery, Redis or PostgreSQL processes: 3 workers fill 2 cores.
TEST_WORKERS ?= 3
test: venv  ## the whole suite, against real PostgreSQL and Redis
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

# Drift, the day it happens: a throwaway venv with the newest releases requirements.in allows
# (.ci/test-latest): which packages are newer than constraints.txt, the tests that start no
# process, and the Procfile's web command started for real. Not part of `make test`: run it daily.
test-latest:  ## the newest releases requirements.in allows, in a temp venv: drift, fast tests, a real Daphne start
	.ci/test-latest

# The embedded default: SQLite, the in-memory channel layer, runs executed in
# this process — no PostgreSQL, no Redis. DEBUG=1 unless set, and a .env of the
# checkout (written once: DEBUG=1 and a generated SECRET_KEY; quikday/dotenv.py)
# gives every other manage.py command here the same settings. Production runs
# the Procfile, with DEBUG off and no .env.
run serve: export DEBUG ?= 1
run: venv-prod $(BIN)/.installed-examples  ## serve admin, API and WebSockets at http://127.0.0.1:8000 (HOST, PORT)
	$(BIN)/python -m quikday.dotenv
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py ensure_admin --url http://$(HOST):$(PORT)/
	$(MAKE) --no-print-directory serve

serve:  ## the server command of `make run` alone (tests start exactly this)
	exec $(BIN)/daphne -b $(HOST) -p $(PORT) quikday.asgi:application

# The full stack, as deployed: the Procfile's processes under honcho, against
# PostgreSQL and Redis (local defaults below; set DATABASE_URL / REDIS_URL). The
# database is created if missing. honcho is told to read no .env (`-e /dev/null`):
# it would override the environment with it, where the settings let the environment win.
dev: export DEBUG ?= 1
dev: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/quikday
dev: export REDIS_URL ?= redis://127.0.0.1:6379/0
dev: export PATH := $(abspath $(BIN)):$(PATH)
dev: venv  ## the full stack (the Procfile under honcho) on the local PostgreSQL and Redis
	python -m quikday.dotenv
	python manage.py ensure_database
	python manage.py migrate --noinput  # the Procfile's release phase
	python manage.py ensure_admin --url http://$(HOST):$(PORT)/
	honcho -e /dev/null start --port $(PORT) web worker beat

# Benchmarks (bench/, docs/benchmarks.md): the real stack against PostgreSQL and
# Redis (DATABASE_URL / REDIS_URL override the bench's own quikday_bench and db 13).
bench: venv  ## all five modes, medians of 3: table, bench/results/<date>.json, docs/benchmarks.md (~25 min)
	$(BIN)/python bench/run.py

bench-quick: venv  ## the same workloads, small and once (< 2 min): a smoke test, no timing goals
	$(BIN)/python bench/run.py --quick

# Mutation testing (docs/testing.md): cosmic-ray over realtime/ and runs' services and
# executor, each module against its own curated tests; reports in build/mutation/.
# Not part of `make test` or CI (an hour or more). MODULES=realtime/delivery/hub.py limits it.
mutate: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/quikday_mutate
mutate: venv  ## mutation score of the guarantee-holding modules: build/mutation/summary.md
	nice -n 15 $(BIN)/python mutation/run.py $(MODULES)
# Faults against servers of the tests' own (a redis-server, a PostgreSQL cluster, Daphne,
# workers, beat): the same tests as in `make test`, repeated CHAOS_ROUNDS times.
CHAOS_ROUNDS ?= 3
# Then the soak (tests/soak/): runs and client churn for SOAK_SECONDS, RSS and tracemalloc figures to SOAK_REPORT.
SOAK_SECONDS ?= 600
SOAK_REPORT ?= soak-report.txt
chaos: venv  ## the fault tests (Redis restarts, PostgreSQL restarts and terminated connections, lost workers), repeated; then the soak
	for round in $$(seq $(CHAOS_ROUNDS)); do \
	  $(BIN)/python -m pytest -q -p no:cacheprovider tests/scenarios/test_redis_outage_e2e.py tests/scenarios/test_database_faults_e2e.py \
	    tests/runs/test_redis_restart_e2e.py tests/runs/test_tasks_e2e.py tests/scenarios/test_protocol_daphne.py || exit 1; \
	done
	SOAK_SECONDS=$(SOAK_SECONDS) SOAK_REPORT=$(SOAK_REPORT) nice -n 10 $(BIN)/python -m pytest -q -s -p no:cacheprovider \
	  -o timeout=$$(( $(SOAK_SECONDS) + 300 )) tests/soak

lint: venv  ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: venv  ## ruff format, then ruff check --fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:  ## remove .venv, collected static files and build output
	rm -rf $(VENV) staticfiles .pytest_cache build
