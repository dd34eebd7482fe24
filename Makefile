# mlpulse developer commands. Every target creates the virtualenv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv run test unit integration bench check lint typecheck audit fuzz soak schemas clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: venv  ## embedded broker + worker + simulator, printing window summaries and alerts
	$(VENV)/bin/mlpulse demo

test: venv  ## the whole suite: unit and doctests (2 processes), then integration on a real broker
	$(PY) -m pytest -n 2 -m "not integration"
	$(PY) -m pytest -m integration

unit: venv  ## no broker: unit tests, docstring examples, the engine's scenarios in process
	$(PY) -m pytest -m "not integration"

integration: venv  ## on the embedded broker (and Prometheus, Alertmanager, Chromium if installed)
	$(PY) -m pytest -m integration

bench: venv  ## installs the bench extra (Quix Streams, the peer) first
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	$(PY) -m bench --slices region,tier
	$(PY) -m bench --only-envelopes --no-quix --slices region,tier --window-seconds 10 \
		--repeat 3 --stages --output bench/results/slices-worker-10s.json
	$(PY) -m bench.slices
	$(PY) -m bench.detection
	$(PY) -m bench.memory --worker
	$(PY) -m bench.memory --worker --cases '' --windows 13 --later-events 25 \
		--output bench/results/memory-steady.json
	$(PY) -m bench.latency
	$(PY) -m bench.scaleout
	$(PY) -m bench.sdk
	$(PY) -m bench.crash
	$(PY) -m bench.crash --workers 3

SOAK_SECONDS ?= 600
soak: venv  ## a worker at a steady 20k events/s for SOAK_SECONDS (3600: the hour-long run)
	$(PY) -m bench.soak --duration-seconds $(SOAK_SECONDS)

check: lint typecheck audit test

# known vulnerabilities of the pinned dependencies (constraints.txt); needs PyPI's JSON API or
# OSV (AUDIT_FLAGS="-s osv"); --strict fails when a package could not be audited
AUDIT_FLAGS ?=
audit: venv
	$(VENV)/bin/pip-audit -r constraints.txt --no-deps --disable-pip --strict $(AUDIT_FLAGS)

lint: venv
	$(VENV)/bin/ruff check app tests bench

typecheck: venv
	$(VENV)/bin/mypy

fuzz: venv  ## the fuzz tests at nightly volume: 2M generated inputs, 50x the hypothesis examples
	MLPULSE_FUZZ_INPUTS=2000000 MLPULSE_FUZZ_SCALE=50 $(PY) -m pytest -p no:cacheprovider --timeout 0 \
		tests/unit/test_fuzz_volume.py tests/unit/test_codec_fuzz.py

schemas: venv
	$(VENV)/bin/mlpulse schemas --out schemas

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
