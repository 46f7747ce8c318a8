# Batchline: every target sets up what it needs (virtual environment, redis-server) first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=
# Most tests wait on real processes (workers, Redis, countdowns): run six at a time.
PYTEST_WORKERS ?= 6

.PHONY: install redis promtool test demo bench lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# redis-server from the system's packages when the machine has none.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server >/dev/null; }
	@redis-server --version

# promtool (Debian's prometheus package) for the alert rules' unit tests.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing prometheus (promtool)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@promtool --version | head -1

test: $(STAMP) redis promtool
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

demo: $(STAMP) redis
	$(BIN)/batchline demo

bench: $(STAMP) redis
	$(PY) -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check batchline workers tasks tests bench
	$(BIN)/ruff format --check batchline workers tasks tests bench
	$(BIN)/mypy batchline workers tasks

format: $(STAMP)
	$(BIN)/ruff format batchline workers tasks tests bench
	$(BIN)/ruff check --fix batchline workers tasks tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
