#!/usr/bin/env bash
# Builds helm (for the chart tests) from the wrapper module tools/helm into a cache outside
# the clone keyed by version. Prints the binary's path on the last line of stdout. With --check,
# builds nothing and exits 1 when it is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
version=$(awk '/^require helm.sh\/helm\/v3/ {print $3}' "$here/tools/helm/go.mod")
bin="${GOSSAMER_CACHE:-$HOME/.cache/gossamer}/helm/$version/bin"
if [ ! -x "$bin/helm" ] && [ "${1:-}" = --check ]; then
  exit 1
fi
if [ ! -x "$bin/helm" ]; then
  command -v go >/dev/null || { echo "helm-bin: Go is needed to build helm" >&2; exit 1; }
  mkdir -p "$bin"
  start=$(date +%s)
  echo "helm-bin: building helm $version into $bin" >&2
  (cd "$here/tools/helm" && CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=readonly \
    go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" \
    -o "$bin/helm.tmp.$$" helm.sh/helm/v3/cmd/helm) >&2
  mv "$bin/helm.tmp.$$" "$bin/helm"
  echo "helm-bin: built in $(( $(date +%s) - start ))s" >&2
fi
echo "$bin/helm"
