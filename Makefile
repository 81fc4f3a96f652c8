# Gossamer: every target installs what it needs (Debian packages, uv, Python deps, kube binaries).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BIN ?= /usr/bin/python3.11
export UV_PYTHON := $(PYTHON_BIN)
export UV_LINK_MODE := copy
UV ?= uv
RUN := $(UV) run --frozen
DEB_PACKAGES := python3.11 iptables iproute2 etcd-server curl nghttp2-client wrk tcpdump procps psmisc util-linux nginx openssl prometheus chromium chromium-driver zsh fish
# The real node (make node-up, make e2e without Docker): not needed by make test.
NODE_DEB_PACKAGES := containerd runc containernetworking-plugins buildah skopeo umoci mmdebstrap \
                     conntrack socat ipset docker-registry
NODE_STATE ?= /var/lib/gossamer-node
BENCH_DEB_PACKAGES := nginx-light iperf3 wrk nghttp2-client util-linux valgrind
REGISTRY ?= gossamer
TAG ?= dev
SERVICES := destination identity injector proxy proxy-init

.PHONY: help setup deb bench-deb apt uv-install sync runtime kube-bins kube-up kube-down protos protos-check lint fmt \
        test test-unit fuzz images push demo e2e node-deb node-bins node-up node-down bench bench-instructions bench-control-plane clean

help:
	@echo "make demo   - run the local mesh demo (needs root)"
	@echo "make test   - lint and run every test (CI runs this)"
	@echo "make fuzz   - fuzz every untrusted-input parser (~1M inputs; FUZZ_TOTAL=, FUZZ_ARGS=)"
	@echo "make node-up / node-down - a real Kubernetes node here (kubelet, containerd; root)"
	@echo "make e2e    - the end-to-end suite on kind, or on the real node without Docker"
	@echo "other: setup lint fmt protos kube-bins kube-up kube-down images push bench bench-instructions bench-control-plane clean"

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

# Rebuilt only when a workspace package's files, the lockfile or this venv's Python changed
# (the stamp holds a hash of them all); a warm `make test` then skips the reinstall.
RUNTIME_SOURCES_HASH = { echo $(PYTHON_BIN) $(RUNTIME_VENV); cat uv.lock; \
	  find libs services cli charts -type f -not -path '*/tests/*' -not -path '*/__pycache__/*' \
	    -not -name '*.pyc' | LC_ALL=C sort | xargs -d '\n' sha256sum; \
	} | sha256sum | cut -d' ' -f1

runtime: sync
	@stamp=$(RUNTIME_VENV)/.gossamer-sources; want=$$($(RUNTIME_SOURCES_HASH)); \
	if [ -x $(RUNTIME_VENV)/bin/python ] && [ "$$(cat $$stamp 2>/dev/null)" = "$$want" ]; then exit 0; fi; \
	rm -f $$stamp; \
	UV_PROJECT_ENVIRONMENT=$(RUNTIME_VENV) $(UV) sync --frozen --no-editable --no-default-groups --quiet \
	  --compile-bytecode \
	  $(addprefix --reinstall-package ,$(WORKSPACE_PACKAGES)) && \
	chmod -R a+rX $(RUNTIME_VENV) && echo "$$want" > $$stamp

setup: sync runtime kube-bins

# Every Go-built binary; they need only Go. helm builds beside Kubernetes + kwok; kubectl
# follows Kubernetes, whose packages it shares through the Go build cache.
kube-bins:
	@bash scripts/helm-bin.sh >/dev/null & helm=$$!; \
	bash scripts/kube-bins.sh >/dev/null && bash scripts/kubectl-bin.sh >/dev/null; kube=$$?; \
	wait $$helm; helm=$$?; \
	exit $$(( kube || helm ))

kube-up: setup
	@$(RUN) python -m gossamer_kube.testing up

node-deb:
	@$(MAKE) --no-print-directory apt PACKAGES="$(NODE_DEB_PACKAGES)"

node-bins: deb
	@bash scripts/kube-bins.sh --node >/dev/null

# A real single-node cluster in its own network namespace (kubelet, containerd, kube-proxy,
# cluster DNS, a registry on localhost:5000); state in $(NODE_STATE). Needs root.
node-up: sync node-deb kube-bins node-bins
	@$(RUN) python -m gossamer_kube.realnode.node up --state-dir $(NODE_STATE) \
	  --node-bin "$$(bash scripts/kube-bins.sh --node | tail -n1)"

node-down: uv-install
	@$(RUN) python -m gossamer_kube.realnode.node down --state-dir $(NODE_STATE)

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

# On a fresh machine the Go builds (Kubernetes, kwok, helm: minutes of CPU) are the longest
# step and need only Go, so they start first, in their own process group at low priority,
# while apt, uv, lint and the tests that need no binaries run; the tests marked `binaries`
# (the real apiserver, kwok, kubectl, helm: tests/integration, tests/e2e) run once built.
# When every binary is already cached, one pytest runs everything.
test: uv-install
	@set -uo pipefail; \
	if bash scripts/kube-bins.sh --check >/dev/null && bash scripts/helm-bin.sh --check >/dev/null \
	  && bash scripts/kubectl-bin.sh --check >/dev/null; then \
	  $(MAKE) --no-print-directory runtime lint protos-check && $(RUN) pytest; exit $$?; \
	fi; \
	bins_log=$$(mktemp); \
	setsid nice -n 10 $(MAKE) --no-print-directory kube-bins >$$bins_log 2>&1 & bins=$$!; \
	trap 'kill -- -$$bins 2>/dev/null; rm -f $$bins_log' EXIT; \
	$(MAKE) --no-print-directory runtime lint protos-check || exit $$?; \
	rc=0; $(RUN) pytest -m "not binaries" || rc=$$?; \
	wait $$bins || { echo "make test: building the test binaries failed:" >&2; cat $$bins_log >&2; exit 1; }; \
	$(RUN) pytest -m binaries || rc=$$?; \
	exit $$rc

test-unit: sync
	@$(RUN) pytest libs services cli -m "not kube and not netns"

# Coverage-guided fuzzing (atheris) of every parser of untrusted input: ~1M inputs, niced,
# two targets at a time; not part of `make test`. Writes fuzz/results/summary.md.
FUZZ_TOTAL ?= 1050000
FUZZ_JOBS ?= 2
fuzz: sync
	@$(UV) run --frozen --group fuzz nice -n 15 python -m fuzz.run --total $(FUZZ_TOTAL) --jobs $(FUZZ_JOBS) $(FUZZ_ARGS)

# docker when it is present, buildah (no daemon) otherwise; BASE=local builds from a Debian
# base made with mmdebstrap (scripts/base-image.sh) where Docker Hub is out of reach.
images:
	@REGISTRY=$(REGISTRY) TAG=$(TAG) bash scripts/images.sh

push:
	@REGISTRY=$(REGISTRY) TAG=$(TAG) PUSH=1 bash scripts/images.sh

demo: setup
	@$(RUN) gossamer dev up --demo

# kind when docker and kind are present; otherwise the same suite on this machine's real node.
e2e:
	@if command -v docker >/dev/null 2>&1 && command -v kind >/dev/null 2>&1; then \
	  bash scripts/e2e-kind.sh; \
	else $(MAKE) --no-print-directory sync node-deb kube-bins node-bins && bash scripts/e2e-node.sh; fi

bench: setup bench-deb
	@$(RUN) python -m bench $(BENCH_ARGS)

# Instructions per request under callgrind beside a baseline revision (load-independent):
# make bench-instructions BENCH_ARGS="--baseline-rev e01e59f"
bench-instructions: setup bench-deb
	@$(RUN) python -m bench.instructions $(BENCH_ARGS)

bench-control-plane: sync
	@bash scripts/kube-bins.sh >/dev/null
	@$(RUN) python -m bench.control_plane

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache bench/results/*
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
