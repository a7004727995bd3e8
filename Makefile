# The two commands of the README: `make serve` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
PYTEST_ARGS ?=
# Exact versions and hashes of every dependency (`make lock` writes them): what CI tested is
# what a server installs. The Dockerfile installs LOCK; tests/test_wheel.py checks it does.
LOCK := requirements/lock.txt
TEST_LOCK := requirements/lock-test.txt
PIP_TOOLS := pip-tools==7.6.2
COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes \
	--allow-unsafe --all-build-deps --strip-extras --no-emit-index-url --no-emit-find-links \
	--no-emit-trusted-host

.PHONY: serve test test-shifted lint typecheck migrate translations bench reliability lock clean help

help:
	@echo "make serve   - set up, migrate and run probono serve on 127.0.0.1:8080 (SQLite in ./var)"
	@echo "make test    - set up and run the tests on SQLite (and PostgreSQL if TEST_DATABASE_URL is set)"
	@echo "make test-shifted - the SQLite suite again under a clock 400 days ahead (needs faketime)"
	@echo "make lint    - ruff and mypy (make typecheck: mypy alone)"
	@echo "make lock    - re-resolve the dependencies into $(LOCK) and $(TEST_LOCK)"
	@echo "make reliability - crash, faults, forgery, fuzz, access, secrets at rest (~6 min)"
	@echo "make bench   - benchmarks against the limits into bench/RESULTS.md (~15 min)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The locked dependencies (hash-checked; setuptools included, so the project itself builds
# without fetching anything unpinned), then the project in editable mode on top of them.
$(STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

$(TEST_STAMP): pyproject.toml $(TEST_LOCK) | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r $(TEST_LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@ $(STAMP)

# After changing the dependencies in pyproject.toml: re-resolves both files, keeping every pin
# that still fits (the test lock is constrained by the runtime lock, so the two agree). Newer
# releases: `make lock LOCK_ARGS=--upgrade`, or one package: `make lock LOCK_ARGS="-P aiohttp"`.
# The next `make test` or `make serve` reinstalls from the new files.
LOCK_ARGS ?=
lock: | $(BIN)/python
	$(BIN)/pip install --quiet '$(PIP_TOOLS)'
	@mkdir -p requirements
	$(COMPILE) $(LOCK_ARGS) -o $(LOCK) pyproject.toml
	$(COMPILE) $(LOCK_ARGS) --extra test -c $(LOCK) -o $(TEST_LOCK) pyproject.toml

migrate: $(STAMP)
	$(BIN)/probono db upgrade

serve: $(STAMP) migrate
	$(BIN)/probono serve --host 127.0.0.1 --port 8080

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)
	@if [ -n "$$TEST_DATABASE_URL" ]; then \
		echo "== again on PostgreSQL ($$TEST_DATABASE_URL) =="; \
		PROBONO_TEST_BACKEND=postgresql $(BIN)/python -m pytest -q $(PYTEST_ARGS); \
	fi

# The SQLite suite again with the process clock 400 days ahead (libfaketime): a test that
# typed the date it was written, or reads the real clock where it should take the injected
# one, fails here on any day instead of on one day next year.
SHIFT ?= +400d
test-shifted: $(TEST_STAMP)
	@command -v faketime >/dev/null || { echo "make test-shifted needs faketime (apt-get install faketime)"; exit 2; }
	@echo "== SQLite again under a clock shifted $(SHIFT) =="
	faketime -f '$(SHIFT)' $(BIN)/python -c 'import datetime; print("clock now:", datetime.datetime.now(datetime.UTC).isoformat())'
	PROBONO_TEST_BACKEND=sqlite faketime -f '$(SHIFT)' $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Benchmarks against the limits: writes bench/RESULTS.md, ends with one `bench:` line.
bench: $(TEST_STAMP)
	$(BIN)/python bench/run.py

# The reliability suite (crash, provider faults, forgery, fuzz, secrets at rest) on SQLite;
# again on PostgreSQL with RELIABILITY_POSTGRES=1 (and TEST_DATABASE_URL): it doubles the time.
reliability: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m reliability tests/reliability $(PYTEST_ARGS)
	@if [ -n "$$RELIABILITY_POSTGRES" ] && [ -n "$$TEST_DATABASE_URL" ]; then \
		echo "== reliability again on PostgreSQL ($$TEST_DATABASE_URL) =="; \
		PROBONO_TEST_BACKEND=postgresql $(BIN)/python -m pytest -q -m reliability tests/reliability $(PYTEST_ARGS); \
	fi

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@$(MAKE) --no-print-directory typecheck

typecheck: $(TEST_STAMP)
	$(BIN)/mypy bot storage

# Extract every client-facing string into bot/locales/messages.pot, merge it into each
# language's catalog, and report what is still untranslated.
translations: $(TEST_STAMP)
	$(BIN)/pybabel extract -F babel.cfg --no-default-keywords -k gettext:2 -k N_ \
		--add-comments=TRANSLATORS: --project=probono-bot --sort-by-file \
		-o bot/locales/messages.pot .
	$(BIN)/pybabel update -i bot/locales/messages.pot -d bot/locales --no-fuzzy-matching
	$(BIN)/python -m bot.i18n

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
