# BioStream: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

# Offline and quiet by default: src/biostream/core/quiet.env (the one place: telemetry off, quiet TensorFlow);
# a value already set in the environment wins.
QUIET_ENV := $(shell grep -v '^\s*\(\#\|$$\)' src/biostream/core/quiet.env)
$(foreach kv,$(QUIET_ENV),$(eval export $(firstword $(subst =, ,$(kv))) ?= $(lastword $(subst =, ,$(kv)))))
# BentoML's model and bento store, inside the project (params.yaml: serve.bentoml_home)
export BENTOML_HOME ?= $(CURDIR)/bentoml_home

.PHONY: setup browser run serve test test-fast lint docs docs-serve bench peers lock clean

## setup: create .venv and install the locked dependencies and the project
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required, found " + sys.version.split()[0] + "; set PYTHON=/path/to/python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip $$(grep '^uv==' requirements.lock)
	$(UV) -r requirements.lock
	$(UV) --no-deps -e .
	@touch $@

# uv installs the lock's exact versions (the same set pip would) in seconds where pip takes minutes; it reads its
# index from UV_INDEX_URL / UV_DEFAULT_INDEX, not pip.conf (docs/architecture.md)
UV = $(BIN)/uv pip install --quiet --python $(BIN)/python

## run: the whole pipeline (dvc repro) on the embedded defaults: no server, no network needed
run: setup
	dvc repro

## serve: the champion's BentoML service (the bento `make run` built) on http://127.0.0.1:3000
PORT ?= 3000
# the stream store, keys and audit trail: the project's stores/ (a relative path would be the bento's own folder)
serve: export BIOSTREAM_STREAM_STORE ?= sqlite:///$(CURDIR)/stores/streams.db
serve: setup
	@test -f results/bento.json || { echo "results/bento.json is missing: run \`make run\` first"; exit 1; }
	@$(BIN)/biostream keys dev
	bentoml serve $$($(BIN)/python -c "import json; print(json.load(open('results/bento.json'))['bento'])") --port $(PORT)

## browser: Debian's Chromium (the MLflow UI and bed board tests) and poppler-utils (pdftoppm: the case report
## test), with apt-get as root or through sudo, unless present
CHROMIUM ?= $(shell command -v chromium 2>/dev/null || echo /usr/bin/chromium)
export CHROMIUM
browser:
	@{ test -x $(CHROMIUM) && command -v pdftoppm >/dev/null; } || { \
	  echo "installing Debian's chromium and poppler-utils (browser and case report tests)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q chromium poppler-utils >/dev/null || { $$SUDO apt-get update -q >/dev/null && \
	  $$SUDO apt-get install -y -q chromium poppler-utils >/dev/null; }; }

## test: the test suite (code, data, pipeline, registry, browser and notebook tests), on two workers
test: setup browser
	pytest -n 2

## test-fast: the tests that take under a second each
test-fast: setup
	pytest -m "not slow"

## lint: ruff
lint: setup
	ruff check src pipelines tests benchmarks notebooks docs/hooks examples

## bench: benchmarks that print their figures (after `make run`)
bench: setup
	python -m benchmarks.bench_generate
	python -m benchmarks.bench_features
	python -m benchmarks.bench_ocsvm
	python -m benchmarks.bench_detectors
	python -m benchmarks.bench_service
	python -m benchmarks.bench_streams

## docs: the documentation site (MkDocs Material) built with --strict into site/ (a broken link fails it)
docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet
	@echo "site/index.html (or \`make docs-serve\` for http://127.0.0.1:8000)"

docs-serve: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 mkdocs serve

$(VENV)/.docs-installed: requirements-docs.lock $(VENV)/.installed
	$(UV) -r requirements-docs.lock
	@touch $@

## peers: PyOD and a CPU PyTorch for the peer benchmark (optional; `python -m benchmarks.bench_peers`)
peers: setup
	$(BIN)/python -m pip install --quiet -r requirements-peers.lock

## lock: re-resolve requirements.lock from pyproject.toml's pins (in a throw-away venv)
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e .[dev]
	{ echo "# Exact set of packages BioStream installs (Python 3.11, Linux x86_64). Made by \`make lock\` from"; \
	  echo "# pyproject.toml's pins; \`make setup\` installs from this file, then the project itself with --no-deps."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^biostream'; } > requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf .pytest_cache .ruff_cache
