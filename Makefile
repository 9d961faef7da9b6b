# TMR license server: developer and CI entry points.
#   make test       everything CI runs: lint, types, unit, simulation, integration, molecule
#   make test-fast  the tiers that need no containers (seconds to a few minutes)
#   make lab        bring up the five-host podman lab and run the main playbooks
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
SIM_SEEDS ?= 500
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help venv lint typecheck test-unit test-sim test-sim-long test-model test-integration test-fast test-lab test \
        lab lab-down bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | sort

$(STAMP): pyproject.toml
	@echo "==> creating virtualenv $(VENV)"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## create the development virtualenv

lint: venv ## ruff over the Python code
	$(VENV)/bin/ruff check services tests bench molecule
	$(VENV)/bin/ruff format --check services tests bench molecule

typecheck: venv ## mypy --strict over the tmr package, the benchmarks and the tests
	$(VENV)/bin/mypy

test-unit: venv ## fast unit tests
	$(PY) -m pytest -q tests/unit

test-sim: venv ## deterministic simulation of the replication protocol (SIM_SEEDS seeds)
	TMR_SIM_SEEDS=$(SIM_SEEDS) $(PY) -m pytest -q tests/sim

test-sim-long: venv ## the simulation over 10,000 seeds (stops at the first violation; ~40 min)
	TMR_SIM_SEEDS=10000 $(PY) -m pytest -q -x tests/sim/test_simulation.py -k over_seeds

test-model: venv ## spin checks the Promela model of the replication protocol (model/), and finds seeded bugs
	$(PY) -m pytest -q -p no:cacheprovider tests/model

test-integration: venv ## real processes on loopback (local cluster)
	$(PY) -m pytest -q tests/integration

test-fast: lint typecheck ## everything that needs no containers (100 simulation seeds)
	TMR_SIM_SEEDS=100 $(PY) -m pytest -q tests/unit tests/sim tests/integration tests/security

test: lint typecheck lint-ansible collection-sanity ## everything, as CI runs it: 500 simulation seeds, molecule, the end-to-end scenarios
	TMR_SIM_SEEDS=$(SIM_SEEDS) $(PY) -m pytest -q -p no:cacheprovider tests/unit tests/sim tests/integration tests/security
	$(MAKE) test-model
	$(MAKE) test-lab
	$(MAKE) test-lab-e2e
	@echo "==> all test tiers passed"

# --- the Python package: wheel and sdist (one version: tmr.__version__, also galaxy.yml's) --------
.PHONY: dist
dist: venv ## build the wheel and the sdist of tmr-license-server into build/dist (python -m build)
	rm -rf build/dist build/dist-src && mkdir -p build/dist-src
	@# from a copy of the tracked files as they are in the work tree: nothing untracked, no egg-info
	git ls-files -z -- pyproject.toml MANIFEST.in README.md LICENSE CHANGELOG.md requirements services \
	  | tar --null -T - -cf - | tar -C build/dist-src -xf -
	SOURCE_DATE_EPOCH=315532800 PIP_CONSTRAINT= $(PY) -m build --outdir build/dist build/dist-src
	rm -rf build/dist-src
	@ls -l build/dist

# --- the Ansible collection tmr.license_server (galaxy.yml at the repository root) ---------------
COLLECTION_VERSION := $(shell sed -n 's/^version: *//p' galaxy.yml)
COLLECTION_TARBALL := build/tmr-license_server-$(COLLECTION_VERSION).tar.gz
# a clean collections path holding only the installed tarball: make lab and molecule deploy from it
COLLECTIONS_DIR := $(CURDIR)/build/collections
ANSIBLE_GALAXY := $(abspath $(VENV))/bin/ansible-galaxy
COLLECTION_SOURCES := galaxy.yml README.md LICENSE CHANGELOG.md $(shell git ls-files meta roles playbooks monitoring inventory/example 2>/dev/null)
.PHONY: collection collection-install collection-sanity

$(COLLECTION_TARBALL): $(COLLECTION_SOURCES)
	@mkdir -p build
	@test -x $(ANSIBLE_GALAXY) || { echo "!!! $(ANSIBLE_GALAXY) missing: make lab-deps (the lab extra)" >&2; exit 1; }
	$(ANSIBLE_GALAXY) collection build --force --output-path build .

collection: $(COLLECTION_TARBALL) ## build the Ansible collection tarball build/tmr-license_server-VERSION.tar.gz

collection-install: $(COLLECTION_TARBALL) ## install the tarball into a clean build/collections (what make lab and molecule run)
	rm -rf $(COLLECTIONS_DIR)
	$(ANSIBLE_GALAXY) collection install --offline -p $(COLLECTIONS_DIR) $(COLLECTION_TARBALL)

collection-sanity: lab-deps $(COLLECTION_TARBALL) ## ansible-test sanity (the tests that apply, no containers) on the installed tarball
	@bash .ci/collection-sanity.sh $(abspath $(VENV)) $(COLLECTION_TARBALL)

include bench/Makefile.inc
include lab/Makefile.inc

clean: ## remove caches (keeps the virtualenv)
	rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis $(COLLECTIONS_DIR) build/tmr-license_server-*.tar.gz
