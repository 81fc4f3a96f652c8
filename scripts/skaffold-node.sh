#!/usr/bin/env bash
# skaffold against this machine's real node (make node-up), without Docker:
#   bash scripts/skaffold-node.sh run|dev|delete [skaffold flags]
# runs `skaffold <command> -p node` with skaffold (scripts/skaffold-bin.sh), helm and the node's
# kubectl on PATH and the node's kubeconfig. skaffold runs inside the node's network namespace,
# where the node's registry listens on localhost:5000 (skaffold reads each pushed image's digest
# from it); each image is built by buildah in this shell's network namespace, which reaches the
# package registries (GOSSAMER_BUILD_NETNS), and pushed into the node's (PUSH_NETNS).
# The chart's trust anchor and issuer come from .dev/ (make them once with
# `uv run gossamer install --write-identity-dir .dev >/dev/null`). Needs root.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
NODE_STATE=${NODE_STATE:-/var/lib/gossamer-node}
NETNS=gossamer-node
REGISTRY_HOST=localhost:5000

die() { echo "skaffold-node: $*" >&2; exit 2; }
[ $# -ge 1 ] || die "usage: $0 run|dev|delete|build|render [skaffold flags]"
command=$1; shift
[ "$(id -u)" = 0 ] || die "needs root (it enters the node's network namespace)"
[ -f "$NODE_STATE/node.json" ] && [ -e "/run/netns/$NETNS" ] || die "no node is up (make node-up)"
for f in ca.crt issuer.crt issuer.key; do
  [ -s ".dev/$f" ] || die ".dev/$f is missing: uv run gossamer install --write-identity-dir .dev >/dev/null"
done

skaffold=$(bash scripts/skaffold-bin.sh | tail -n1)
helm=$(bash scripts/helm-bin.sh | tail -n1)
node_bin=$(bash scripts/kube-bins.sh --node | tail -n1)
export PATH="$(dirname "$skaffold"):$(dirname "$helm"):$node_bin:$PATH"
export KUBECONFIG="$NODE_STATE/cluster/kubeconfig"
export GOSSAMER_BUILD_NETNS="/proc/$$/ns/net" PUSH_NETNS=$NETNS

# skaffold's global settings for this run only (the user's ~/.skaffold/config is left alone):
# no update check or metrics (nothing outside is reachable), the registry is plain HTTP, and
# --default-repo keeps the images' gossamer/ path (multi-level repo).
config=$(mktemp)
trap 'rm -f "$config"' EXIT
cat >"$config" <<YAML
global:
  update-check: false
  collect-metrics: false
  local-cluster: false
  multi-level-repo: true
  insecure-registries: [$REGISTRY_HOST]
  survey: {disable-prompt: true}
kubeContexts: []
YAML
# The commands that build or deploy images take the registry; delete takes neither flag.
registry_flags=()
case "$command" in
  delete) ;;
  *) registry_flags=(--default-repo "$REGISTRY_HOST" --insecure-registry "$REGISTRY_HOST") ;;
esac
# Not exec: this shell's network namespace (GOSSAMER_BUILD_NETNS) must outlive skaffold.
nsenter --net="/run/netns/$NETNS" skaffold "$command" -p node --config "$config" \
  "${registry_flags[@]}" "$@"
