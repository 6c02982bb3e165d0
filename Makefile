# Everything a newcomer needs: `make demo` and `make test`. Both create .venv on first use.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo monitor test test-pynenc-suites test-password-auth test-deps screenshots lint bench bench-scale bench-e2e clean

$(STAMP): pyproject.toml
	@PY=$$(scripts/find-python) || exit 1; \
	  [ -x $(BIN)/python ] || { echo "Creating $(VENV) with $$PY"; "$$PY" -m venv $(VENV); }
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "Installing pynenc-postgres and its development dependencies into $(VENV)"
	@$(BIN)/python -m pip install --quiet --editable '.[binary,dev]'
	@touch $(STAMP)

## Run the demo: embedded PostgreSQL 18 (or $$PYNENC__POSTGRES_URL), real runners, SQL audit.
demo: $(STAMP)
	$(BIN)/pynenc-postgres demo

## The demo, then pynmon on its data at http://127.0.0.1:8000 until Ctrl-C.
monitor: $(STAMP)
	$(BIN)/pynenc-postgres demo --monitor 8000

## Run every test (embedded PostgreSQL 18 unless PYNENC_TEST_POSTGRES_URL is set).
test: $(STAMP) test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Run only pynenc's own plugin suites, all 14 on the Postgres-only stack; CI runs the
## component suites (PYNENC_SUITES=tests/pynenc_suite/postgres) on a second Postgres version.
PYNENC_SUITES ?= tests/pynenc_suite
test-pynenc-suites: $(STAMP)
	$(BIN)/python -m pytest $(PYNENC_SUITES) $(PYTEST_ARGS)

## pynenc's state-backend and app-id-isolation suites, our backend and secrets tests, against
## a private server that requires a password (scram-sha-256), with the password in every URL.
PASSWORD_AUTH_TESTS := tests/pynenc_suite/test_unit_state_backend.py \
	tests/pynenc_suite/test_integration_state_backend.py \
	tests/pynenc_suite/test_unit_app_id_isolation.py \
	tests/pynenc_suite/test_integration_app_id_isolation.py \
	tests/test_state_backend.py tests/test_secrets.py
test-password-auth: $(STAMP)
	env -u PYNENC_TEST_POSTGRES_URL PYNENC_TEST_POSTGRES_AUTH=password \
	  $(BIN)/python -m pytest $(PASSWORD_AUTH_TESTS) $(PYTEST_ARGS)

## Debian's Chromium and PgBouncer, and pynmon's front-end files, for some tests (idempotent).
test-deps:
	@scripts/install-test-deps

## Refresh docs/screenshots from the pynmon browser tests (the two-host one needs root for its network namespaces).
screenshots: $(STAMP) test-deps
	PYNENC_POSTGRES_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest tests/test_pynmon_browser.py tests/multihost/test_pynmon_hosts.py -q

lint: $(STAMP)
	$(BIN)/ruff check src tests alembic benchmarks
	$(BIN)/ruff format --check src tests alembic benchmarks
	$(BIN)/mypy

## Side-by-side benchmark against SQLite, memory, Redis and a raw psycopg floor.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.workload

## Scale benchmark: 1M invocations seeded, lookups at 1k and 1M, bytes per invocation, memory.
bench-scale: $(STAMP)
	$(BIN)/python -m benchmarks.scale

## Round trips per task and the end-to-end race against procrastinate: statements per task,
## tasks/s through PersistentProcessRunner next to procrastinate's workers, submit rates.
## procrastinate is installed into .venv from benchmarks/requirements.txt (a peer for the
## benchmarks only, never a dependency of the package). BENCH_ARGS=--write-docs records them.
bench-e2e: $(STAMP)
	$(BIN)/python -m pip install --quiet -r benchmarks/requirements.txt
	$(BIN)/python -m benchmarks.statements $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.e2e $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.submit $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pynenc-postgres build dist
