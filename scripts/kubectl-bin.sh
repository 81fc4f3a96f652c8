#!/usr/bin/env bash
# Builds kubectl (for the tests and local mode) from the wrapper module tools/kube, at the
# Kubernetes version of the test cluster, into a cache outside the clone keyed by version.
# Debian's kubernetes-client is far too old for that apiserver, and nothing is downloaded from
# release pages. Prints the binary's path on the last line of stdout. With --check, builds
# nothing and exits 1 when it is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
version=$(awk '/^require k8s.io\/kubernetes/ {print $3}' "$here/tools/kube/go.mod")
bin="${GOSSAMER_CACHE:-$HOME/.cache/gossamer}/kubectl/$version/bin"
if [ ! -x "$bin/kubectl" ] && [ "${1:-}" = --check ]; then
  exit 1
fi
if [ ! -x "$bin/kubectl" ]; then
  command -v go >/dev/null || { echo "kubectl-bin: Go is needed to build kubectl" >&2; exit 1; }
  mkdir -p "$bin"
  minor=${version#v1.}; minor=${minor%%.*}
  stamp="-X \$pkg.gitVersion=$version -X \$pkg.gitMajor=1 -X \$pkg.gitMinor=$minor -X \$pkg.gitTreeState=clean -X \$pkg.buildDate=1970-01-01T00:00:00Z"
  ldflags="-s -w ${stamp//\$pkg/k8s.io/component-base/version} ${stamp//\$pkg/k8s.io/client-go/pkg/version}"
  start=$(date +%s)
  echo "kubectl-bin: building kubectl $version into $bin" >&2
  (cd "$here/tools/kube" && CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=readonly \
    go build -trimpath -ldflags "$ldflags" -o "$bin/kubectl.tmp.$$" k8s.io/kubernetes/cmd/kubectl) >&2
  mv "$bin/kubectl.tmp.$$" "$bin/kubectl"
  echo "kubectl-bin: built in $(( $(date +%s) - start ))s" >&2
fi
echo "$bin/kubectl"
