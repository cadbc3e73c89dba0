# Every target bootstraps itself: a fresh machine only needs python3 (3.11+) and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The locks (README "Dependencies"): exact versions with hashes, resolved for every platform (uv --universal)
# from Python 3.11 up. runtime.lock is what the Docker image installs (the bot with the `video` extra);
# dev.lock is that plus the `dev` and `sandbox` extras, for make, CI and development.
RUNTIME_LOCK := requirements/runtime.lock
DEV_LOCK := requirements/dev.lock
LOCK_FLAGS := --quiet --universal --python-version 3.11 --generate-hashes --custom-compile-command 'make lock'

.PHONY: test lint typecheck pytest demo run bench sandbox check clean lock screenshot

# Installs exactly the locked versions (pip refuses any file whose hash is not in the lock), then the project
# itself without touching them. A changed pyproject.toml without `make lock` fails tests/project/test_packaging.py.
$(STAMP): $(DEV_LOCK) pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Re-resolves both locks from pyproject.toml (and requirements/build.in), keeping every pin the specifiers still
# allow; `make lock UPGRADE=1` moves everything to the newest allowed. uv comes from dev.lock.
lock: $(STAMP)
	$(BIN)/uv pip compile $(LOCK_FLAGS) $(if $(UPGRADE),--upgrade) --extra video \
		pyproject.toml requirements/build.in -o $(RUNTIME_LOCK)
	$(BIN)/uv pip compile $(LOCK_FLAGS) $(if $(UPGRADE),--upgrade) --extra video --extra sandbox --extra dev \
		pyproject.toml requirements/build.in -o $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy bot cogs sandbox tests bench

pytest: $(STAMP)
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/kf2v-bot demo

run: $(STAMP)
	$(BIN)/kf2v-bot run

sandbox: $(STAMP)
	$(BIN)/kf2v-bot sandbox

check: $(STAMP)
	$(BIN)/kf2v-bot check

bench: $(STAMP)
	$(BIN)/python -m bench all

# The README's picture (docs/images/member-view.png) from a fresh demo run; needs Chromium (Debian:
# apt-get install chromium). Nothing else needs it: the picture is committed.
screenshot: $(STAMP)
	$(BIN)/python docs/screenshot.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
