# Gossamer: every target installs what it needs (Debian packages, uv, Python deps, kube binaries).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BIN ?= /usr/bin/python3.11
export UV_PYTHON := $(PYTHON_BIN)
export UV_LINK_MODE := copy
UV ?= uv
RUN := $(UV) run --frozen
DEB_PACKAGES := python3.11 iptables iproute2 etcd-server curl nghttp2-client wrk tcpdump procps psmisc util-linux nginx openssl
BENCH_DEB_PACKAGES := nginx-light iperf3 wrk nghttp2-client util-linux
REGISTRY ?= gossamer
TAG ?= dev
SERVICES := destination identity injector proxy proxy-init

.PHONY: help setup deb bench-deb apt uv-install sync runtime kube-bins kube-up kube-down protos protos-check lint fmt \
        test test-unit images push demo e2e bench bench-control-plane clean

help:
	@echo "make demo   - run the local mesh demo (needs root)"
	@echo "make test   - lint and run every test (CI runs this)"
	@echo "other: setup lint fmt protos kube-bins kube-up kube-down images push e2e bench bench-control-plane clean"

deb:
	@$(MAKE) --no-print-directory apt PACKAGES="$(DEB_PACKAGES)"

bench-deb:
	@$(MAKE) --no-print-directory apt PACKAGES="$(BENCH_DEB_PACKAGES)"

apt:
	@missing=$$(for p in $(PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

uv-install:
	@command -v $(UV) >/dev/null || python3 -m pip install -q "uv==0.13.8"

sync: deb uv-install
	@$(UV) sync --frozen --quiet

# A non-editable copy of every package in a directory any uid can read: the proxy runs as
# uid 2102 and apps as other users, and they cannot enter a clone under /root. Compiled to
# bytecode, as the images are (UV_COMPILE_BYTECODE): those users cannot write __pycache__
# there, so without it every proxy start compiles all it imports again (more than twice the
# import time, and much more on a busy machine).
RUNTIME_VENV ?= $(if $(filter 0,$(shell id -u)),/opt/gossamer/runtime,$(HOME)/.cache/gossamer/runtime)
export GOSSAMER_RUNTIME_VENV := $(RUNTIME_VENV)
WORKSPACE_PACKAGES := $(shell sed -n 's/^name = "\(gossamer-[a-z-]*\)"/\1/p' libs/*/pyproject.toml services/*/pyproject.toml cli/pyproject.toml)

runtime: sync
	@UV_PROJECT_ENVIRONMENT=$(RUNTIME_VENV) $(UV) sync --frozen --no-editable --no-default-groups --quiet \
	  --compile-bytecode \
	  $(addprefix --reinstall-package ,$(WORKSPACE_PACKAGES))
	@chmod -R a+rX $(RUNTIME_VENV)

setup: sync runtime kube-bins

kube-bins: deb
	@bash scripts/kube-bins.sh >/dev/null
	@bash scripts/helm-bin.sh >/dev/null
	@bash scripts/kubectl-bin.sh >/dev/null

kube-up: setup
	@$(RUN) python -m gossamer_kube.testing up

kube-down: uv-install
	@$(RUN) python -m gossamer_kube.testing down

protos: sync
	@$(RUN) python libs/api/generate.py

protos-check: sync
	@$(RUN) python libs/api/generate.py --check

lint: sync
	@$(RUN) ruff check .
	@$(RUN) ruff format --check .
	@$(RUN) mypy

fmt: sync
	@$(RUN) ruff check --fix .
	@$(RUN) ruff format .

test: setup lint protos-check
	@$(RUN) pytest

test-unit: sync
	@$(RUN) pytest libs services cli -m "not kube and not netns"

images:
	@for s in $(SERVICES); do \
	  if docker buildx version >/dev/null 2>&1; then \
	    docker buildx build --platform $${PLATFORMS:-linux/amd64} -f services/$$s/Dockerfile -t $(REGISTRY)/$$s:$(TAG) . || exit 1; \
	  else docker build -f services/$$s/Dockerfile -t $(REGISTRY)/$$s:$(TAG) . || exit 1; fi; \
	done

push: images
	@for s in $(SERVICES); do docker push $(REGISTRY)/$$s:$(TAG) || exit 1; done

demo: setup
	@$(RUN) gossamer dev up --demo

e2e:
	@bash scripts/e2e-kind.sh

bench: setup bench-deb
	@$(RUN) python -m bench

bench-control-plane: sync kube-bins
	@$(RUN) python -m bench.control_plane

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache bench/results/*
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
