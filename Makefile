# Two commands on a fresh machine: `make demo` runs the main job, `make test` passes the tests.
# `make install` builds everything from nothing and is a no-op (seconds) when nothing changed.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# No code may fetch weights or data at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: help install services prometheus browser demo vcdm test bench lock clean

help:
	@echo "make demo    run the shapes-world demo (examples/shapes-demo/manifest.yaml)"
	@echo "make vcdm    Visual-CoT: unconditional vs VCDM vs oracle (examples/vcdm-shapes/manifest.yaml)"
	@echo "make test    run the test suite (PostgreSQL, Azurite, Ray: all real, all local)"
	@echo "make bench   run benchmarks/ and print the measured ratios"
	@echo "make install create or refresh .venv and node_modules (idempotent)"

install: $(VENV)/.installed node_modules/.installed

# torch goes in first, pinned to the CPU build on disk, so nothing later can pull a CUDA build.
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[test]'
	@$(PY) -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 'torch is not 2.13.0')"
	@! $(PIP) show -q torchvision 2>/dev/null || (echo "torchvision must not be installed" && exit 1)
	@touch $@

# Azurite (the Azure Blob emulator the tests run against) lives in the project, not globally.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The PostgreSQL server the journal tests use; start it if this machine has it stopped.
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || { \
	  echo "starting PostgreSQL"; \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -n1) main start; \
	  for i in $$(seq 20); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done; }

# Prometheus and promtool (Debian's package, without the node exporter it recommends) for the
# telemetry tests, which start their own on free ports; a no-op where installed.
prometheus:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  echo "installing Debian's prometheus (promtool)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null; }; }

# Debian's Chromium and its ChromeDriver for the browser tests (grading page, report), driven
# headless by selenium with the driver's path given, so nothing downloads a browser.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing Debian's chromium and chromium-driver"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null; }; }

# The demo finetunes the shipped bases (assets/demo-base and assets/tiny-sd3-base, checked against
# their recorded sha256s; scripts/build_demo_base.sh and build_sd3_base.sh rebuild them) and prints
# the paired comparison per variant; grids land in runs/grids.
demo: install
	$(PY) scripts/verify_demo_base.py
	$(VENV)/bin/orch validate examples/shapes-demo/manifest.yaml
	$(VENV)/bin/orch run examples/shapes-demo/manifest.yaml --paired data.train.captions --grids runs/grids

# Visual-CoT's three arms (examples/vcdm-shapes/manifest.yaml): the two tiny CLIPs it needs (one the chain
# is conditioned on, a second, other seed and data, that judges it by fid_clip), then the sweep.
VCDM_CLIPS := runs/vcdm-clips
$(VCDM_CLIPS)/condition/config.json: | install
	$(VENV)/bin/orch clip train --out $(VCDM_CLIPS)/condition --seed 0 --data-seed 0
$(VCDM_CLIPS)/judge/config.json: | install
	$(VENV)/bin/orch clip train --out $(VCDM_CLIPS)/judge --seed 1 --data-seed 1
vcdm: install $(VCDM_CLIPS)/condition/config.json $(VCDM_CLIPS)/judge/config.json
	$(VENV)/bin/orch validate examples/vcdm-shapes/manifest.yaml
	$(VENV)/bin/orch run examples/vcdm-shapes/manifest.yaml

# One BLAS thread: on 2 cores a second one only spin-waits against torch and the services.
test: install services prometheus browser
	$(VENV)/bin/ruff check .
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider

bench: install services
	@set -e; for b in benchmarks/bench_*.py; do echo "== $$b"; OPENBLAS_NUM_THREADS=1 $(PY) $$b; done

# Re-resolve the pins after changing pyproject.toml (torch stays 2.13.0).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q torch==2.13.0 && .lock-venv/bin/pip install -q -e '.[test]'
	{ sed -n '1,3p' constraints.txt; .lock-venv/bin/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .lock-venv

clean:
	rm -rf $(VENV) node_modules runs .bench
