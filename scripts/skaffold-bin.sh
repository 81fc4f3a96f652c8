#!/usr/bin/env bash
# Builds skaffold (the real node's dev loop: skaffold run/dev -p node) from the wrapper module
# tools/skaffold into a cache outside the clone keyed by version; nothing is downloaded from
# release pages. Stripped (-s -w): the binary is for running, not debugging. Prints the
# binary's path on the last line of stdout. With --check, builds nothing and exits 1 when it
# is missing. The build is large (a few minutes of CPU): it runs under `nice -n 10`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
version=$(awk '/^require github.com\/GoogleContainerTools\/skaffold\/v2/ {print $3}' "$here/tools/skaffold/go.mod")
[ -n "$version" ] || { echo "skaffold-bin: cannot read skaffold's version from tools/skaffold/go.mod" >&2; exit 1; }
bin="${GOSSAMER_CACHE:-$HOME/.cache/gossamer}/skaffold/$version/bin"
if [ ! -x "$bin/skaffold" ] && [ "${1:-}" = --check ]; then
  exit 1
fi
if [ ! -x "$bin/skaffold" ]; then
  command -v go >/dev/null || { echo "skaffold-bin: Go is needed to build skaffold" >&2; exit 1; }
  mkdir -p "$bin"
  start=$(date +%s)
  echo "skaffold-bin: building skaffold $version into $bin (a cold build takes several minutes)" >&2
  pkg=github.com/GoogleContainerTools/skaffold/v2/pkg/skaffold/version
  (cd "$here/tools/skaffold" && CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=readonly \
    nice -n 10 go build -trimpath \
      -ldflags "-s -w -X $pkg.version=$version -X $pkg.buildDate=1970-01-01T00:00:00Z" \
      -o "$bin/skaffold.tmp.$$" github.com/GoogleContainerTools/skaffold/v2/cmd/skaffold) >&2
  mv "$bin/skaffold.tmp.$$" "$bin/skaffold"
  echo "skaffold-bin: built in $(( $(date +%s) - start ))s" >&2
fi
echo "$bin/skaffold"
