#!/usr/bin/env bash
# Builds the upstream Kubernetes binaries that Gossamer's tests and local mode run
# (kube-apiserver, kube-controller-manager, kube-scheduler, kwok) from the wrapper
# modules under tools/, into a cache outside the clone keyed by version.
# Prints the cache's bin directory on the last line of stdout. With --check, builds nothing and
# exits 1 when a binary is missing.
# With --node it builds instead what the real node (make node-up) runs: kubelet, kube-proxy
# and the pause binary, under their own cache key so the test binaries stay untouched, and links
# kubectl there from scripts/kubectl-bin.sh's cache (one kubectl build serves both).
# Those Go builds run under `nice -n 10`: the machine may be shared.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
kube_version=$(awk '/^require k8s.io\/kubernetes/ {print $3}' "$here/tools/kube/go.mod")
kwok_version=$(awk '/^require sigs.k8s.io\/kwok/ {print $3}' "$here/tools/kwok/go.mod")
cache=${GOSSAMER_CACHE:-$HOME/.cache/gossamer}
if [ "${1:-}" = --node ]; then
  bin="$cache/kube/$kube_version-node/bin"
  missing=0
  for b in kubelet kube-proxy pause; do [ -x "$bin/$b" ] || missing=1; done
  if [ "$missing" = 1 ]; then
    command -v go >/dev/null || { echo "kube-bins: Go is needed to build the node binaries" >&2; exit 1; }
    mkdir -p "$bin"
    export CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=readonly
    minor=${kube_version#v1.}; minor=${minor%%.*}
    pkg=k8s.io/component-base/version
    ldflags="-s -w -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    start=$(date +%s)
    tmp="$bin.tmp.$$"
    mkdir -p "$tmp"
    trap 'rm -rf "$tmp"' EXIT
    echo "kube-bins: building kubelet and kube-proxy $kube_version and pause into $bin (cold builds take a while)" >&2
    (cd "$here/tools/kube" && nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
      k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy) >&2
    (cd "$here/tools/pause" && nice -n 10 go build -trimpath -ldflags "-s -w" -o "$tmp/" .) >&2
    mv "$tmp"/* "$bin/"
    echo "kube-bins: built in $(( $(date +%s) - start ))s" >&2
  fi
  # kubectl is the tests' own (same version, same module): built once, linked here so that
  # this directory alone on PATH gives the node's whole toolset.
  kubectl=$(bash "$here/scripts/kubectl-bin.sh" | tail -n1)
  if [ "$(readlink "$bin/kubectl" 2>/dev/null)" != "$kubectl" ]; then
    ln -sfn "$kubectl" "$bin/kubectl.tmp.$$" && mv -T "$bin/kubectl.tmp.$$" "$bin/kubectl"
  fi
  echo "$bin"
  exit 0
fi
bin="$cache/kube/$kube_version-kwok-$kwok_version/bin"
want=(kube-apiserver kube-controller-manager kube-scheduler kwok)
missing=0
for b in "${want[@]}"; do [ -x "$bin/$b" ] || missing=1; done
if [ "$missing" = 0 ]; then
  echo "$bin"
  exit 0
fi
[ "${1:-}" = --check ] && exit 1
command -v go >/dev/null || { echo "kube-bins: Go is needed to build the Kubernetes test binaries" >&2; exit 1; }
mkdir -p "$bin"
export CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=readonly
minor=${kube_version#v1.}; minor=${minor%%.*}
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
start=$(date +%s)
echo "kube-bins: building Kubernetes $kube_version and kwok $kwok_version into $bin (cold builds take a while)" >&2
tmp="$bin.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
# The two modules build side by side: one link step (single-threaded) overlaps the other's
# compiles, and the Go build cache is safe to share between concurrent builds.
(cd "$here/tools/kwok" && go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$kwok_version" -o "$tmp/" sigs.k8s.io/kwok/cmd/kwok) >&2 &
kwok_build=$!
kube_status=0
(cd "$here/tools/kube" && go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler) >&2 || kube_status=$?
kwok_status=0
wait "$kwok_build" || kwok_status=$?
if [ "$kube_status" != 0 ] || [ "$kwok_status" != 0 ]; then
  echo "kube-bins: build failed (kube: $kube_status, kwok: $kwok_status)" >&2
  exit 1
fi
for b in "${want[@]}"; do [ -x "$tmp/$b" ] || { echo "kube-bins: $b was not built" >&2; exit 1; }; done
mv "$tmp"/* "$bin/"
echo "kube-bins: built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
