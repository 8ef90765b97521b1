# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: run test test-unit test-integration test-system install install-test services services-down test-deps lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(TSTAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

install-test: $(TSTAMP)

## make run: install into .venv and start every service in one process (ARGS="--http-port 9000")
run: $(STAMP)
	$(BIN)/exchange-server run $(ARGS)

## make services: install and start MariaDB, Redis and Kafka on 127.0.0.1
services:
	bash scripts/services.sh up

services-down:
	bash scripts/services.sh down

## make test-deps: Debian tools the tests drive for real (chromium, nginx, openssl, wrk)
test-deps:
	bash scripts/test-deps.sh

lint: $(TSTAMP)
	$(BIN)/ruff check exchange_server tests bench
	$(BIN)/mypy

## make test: test dependencies, the servers, lint, then the whole suite
test: $(TSTAMP) services test-deps lint
	eval "$$(bash scripts/services.sh env)" && $(BIN)/python -m pytest $(PYTEST_ARGS)

## make test-unit / test-integration / test-system: one kind of test (tests/<kind>/, see README)
test-unit: $(TSTAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: $(TSTAMP) services
	eval "$$(bash scripts/services.sh env)" && $(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

test-system: $(TSTAMP) services test-deps
	eval "$$(bash scripts/services.sh env)" && $(BIN)/python -m pytest tests/system $(PYTEST_ARGS)

## make bench: every benchmark, figures printed (see bench/README.md)
## make bench BASELINE=<commit> [BENCHES="bench_engine bench_e2e:10,16"] [ROUNDS=3]: the same run
##   alternately against a checkout of <commit>, printing the ratios (bench/compare.py)
BASELINE ?=
BENCHES ?=
ROUNDS ?= 3
bench: $(STAMP)
ifeq ($(strip $(BASELINE)),)
	$(BIN)/python -m bench.run_all
else
	$(BIN)/python -m bench.compare --baseline $(BASELINE) --rounds $(ROUNDS) $(BENCHES)
endif

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
