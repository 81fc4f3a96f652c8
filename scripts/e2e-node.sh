#!/usr/bin/env bash
# make e2e without Docker: the README's "Running on Kubernetes" steps for the real node of this
# machine (make node-up: kubelet, containerd, kube-proxy, cluster DNS, a registry on
# localhost:5000), run as written: each step is the README's ```sh block marked
# `<!-- e2e-node: NAME -->` (scripts/readme-step.sh), and this script checks the outcome
# between steps. In order:
#   images by buildah pushed to the node's registry (no buildah working container left behind);
#   `gossamer install | kubectl apply`, `gossamer check`, the demo meshed by the real webhook,
#   tests/kind against it; `gossamer uninstall` leaving nothing behind;
#   Helm: install, the demo, an upgrade that rolls every controller, the same trust anchor and
#   issuer after it, `gossamer check` and tests/kind's control-plane and mTLS tests; uninstall;
#   skaffold: `skaffold run -p node`, `gossamer check`, `skaffold delete`, then the
#   `skaffold dev -p node` edit test (tests/kind/test_skaffold_node.py). E2E_SKAFFOLD=0 skips
#   this phase; skaffold is built (niced, in the background) while the node comes up.
# The node is brought down at the end unless it was already up (or KEEP_NODE=1), also when the
# run fails or is stopped by SIGTERM/SIGINT/SIGHUP (a CI timeout); logs and cluster state are
# collected on failure. At the end buildah's storage keeps only this run's images
# (scripts/prune-e2e-run.sh): each run builds under a new tag, and old tags filled CI disks.
# Under GOSSAMER_REQUIRE_E2E=1 (CI) no phase may be skipped: E2E_SKAFFOLD=0 is refused.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

# The README's steps name these; a node elsewhere would not be the one they describe.
NODE_STATE=/var/lib/gossamer-node
NETNS=gossamer-node
NAMESPACE=gossamer
ARTIFACTS=${E2E_ARTIFACTS:-$here/e2e-artifacts}
E2E_SKAFFOLD=${E2E_SKAFFOLD:-1}
# The README's `uv run` must run the locked environment, never re-lock.
export UV_FROZEN=1

die() { echo "e2e-node: $*" >&2; exit 2; }
fail() { echo "e2e-node: FAILED: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "the real node needs root (network namespaces, containerd, kubelet)"
if [ "${GOSSAMER_REQUIRE_E2E:-0}" = 1 ] && [ "$E2E_SKAFFOLD" != 1 ]; then
  die "GOSSAMER_REQUIRE_E2E=1 runs every phase: unset E2E_SKAFFOLD"
fi
command -v uv >/dev/null 2>&1 || die "uv is not installed (make setup installs it)"
for name in $(bash scripts/readme-step.sh --list); do
  bash scripts/readme-step.sh "$name" >/dev/null || die "the README's step $name cannot be read"
done
started_node=0
skaffold_build=
t0=$(date +%s)

elapsed() { echo "$(( $(date +%s) - t0 ))s"; }

# Runs one README step in this shell (its exports carry over to the next steps), echoing it.
step() {
  local body
  body=$(bash scripts/readme-step.sh "$1")
  echo "e2e-node: README step '$1' after $(elapsed):"
  sed 's/^/    /' <<<"$body"
  eval "$body"
}

kind_tests() {
  GOSSAMER_KIND_CONTEXT="$(kubectl config current-context)" GOSSAMER_NAMESPACE="$NAMESPACE" \
    GOSSAMER_NODE_NETNS=$NETNS uv run --frozen pytest -x -q -p no:cacheprovider "$@"
}

collect() {
  echo "e2e-node: collecting logs into $ARTIFACTS" >&2
  mkdir -p "$ARTIFACTS"
  kubectl get all,events -A -o wide >"$ARTIFACTS/cluster.txt" 2>&1 || true
  kubectl describe pods -A >"$ARTIFACTS/pods-describe.txt" 2>&1 || true
  for ns in "$NAMESPACE" demo; do
    for pod in $(kubectl -n "$ns" get pods -o name 2>/dev/null); do
      kubectl -n "$ns" logs "$pod" --all-containers --prefix >"$ARTIFACTS/$ns-${pod#pod/}.log" 2>&1 || true
    done
  done
  cp -r "$NODE_STATE/logs" "$ARTIFACTS/node-logs" 2>/dev/null || true
  cp -r "$NODE_STATE/cluster/logs" "$ARTIFACTS/cluster-logs" 2>/dev/null || true
  cp -r "$NODE_STATE-failed-logs" "$ARTIFACTS/node-up-failed-logs" 2>/dev/null || true
}

cleanup() {
  status=$?
  # A second TERM/INT/HUP (an impatient CI, a double Ctrl-C) must not cut node-down short.
  trap '' TERM INT HUP
  if [ -n "$skaffold_build" ]; then
    kill -- -"$skaffold_build" 2>/dev/null || true; wait "$skaffold_build" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ]; then collect; fi
  if [ "$started_node" = 1 ] && [ "${KEEP_NODE:-0}" != 1 ]; then
    step node-down || { echo "e2e-node: FAILED: make node-down" >&2; [ "$status" -ne 0 ] || status=1; }
  fi
  # Earlier runs' images go; this run's ($TAG, from the env step) stay as the next one's cache.
  # Without TAG nothing is pruned, and a failed prune is only a warning.
  bash scripts/prune-e2e-run.sh "${TAG:-}"
  echo "e2e-node: finished with status $status in $(elapsed)" >&2
  exit "$status"
}
trap cleanup EXIT
# A CI timeout or Ctrl-C: exit through cleanup with a failing status (bash alone would run the
# EXIT trap with status 0, skipping the log collection).
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP

if [ "$E2E_SKAFFOLD" = 1 ] && ! bash scripts/skaffold-bin.sh --check; then
  echo "e2e-node: building skaffold in the background (log: $ARTIFACTS/skaffold-build.log)"
  mkdir -p "$ARTIFACTS"
  # In its own process group, so that an early exit stops the go build too.
  setsid bash scripts/skaffold-bin.sh >"$ARTIFACTS/skaffold-build.log" 2>&1 &
  skaffold_build=$!
fi

if [ ! -f "$NODE_STATE/node.json" ]; then
  # Set first: a node-up stopped half-way (a signal) leaves its node.json for node-down to use.
  started_node=1
  step node-up
fi
step env

# Image builds must leave no buildah working container behind (each stage makes one).
containers_before=$(buildah containers -aq | sort)
step images
left=$(comm -13 <(echo "$containers_before") <(buildah containers -aq | sort))
[ -z "$left" ] || fail "the image builds left buildah working containers behind: $(buildah containers -a)"

step install
step demo
echo "e2e-node: running tests/kind on the node after $(elapsed)"
kind_tests tests/kind --deselect tests/kind/test_skaffold_node.py
kubectl get pods -A -o wide
kubectl get pods -A -o custom-columns='NAMESPACE:.metadata.namespace,POD:.metadata.name,IMAGES:.status.containerStatuses[*].imageID,SIDECARS:.status.initContainerStatuses[*].imageID'

step uninstall
leftovers() {
  kubectl get namespace "$NAMESPACE" -o name 2>/dev/null || true
  kubectl get crd -o name | grep -E 'linkerd\.io' || true
  kubectl get mutatingwebhookconfigurations,validatingwebhookconfigurations,clusterroles,clusterrolebindings \
    -o name | grep -iE 'gossamer|linkerd' || true
}
left=$(leftovers)
[ -z "$left" ] || fail "left behind after gossamer uninstall: $left"

# Helm: the same control plane from the chart, then an upgrade that keeps the mesh identity.
identity() {
  kubectl -n "$NAMESPACE" get configmap gossamer-identity-trust-roots -o jsonpath='{.data.ca-bundle\.crt}'
  kubectl -n "$NAMESPACE" get secret gossamer-identity-issuer -o jsonpath='{.data.crt\.pem}'
}
controller_pods() {
  # Pods being deleted are left out: rollout status returns before they are gone.
  kubectl -n "$NAMESPACE" get pods -l linkerd.io/control-plane-component -o go-template \
    --template '{{range .items}}{{if not .metadata.deletionTimestamp}}{{.metadata.uid}}{{"\n"}}{{end}}{{end}}' | sort
}
step helm-install
step demo
identity_before=$(identity)
[ -n "$identity_before" ] || fail "no trust anchor or issuer after the Helm install"
[ "$(kubectl -n "$NAMESPACE" get configmap gossamer-identity-trust-roots -o jsonpath='{.data.ca-bundle\.crt}')" = "$(cat .dev/ca.crt)" ] \
  || fail "the Helm install's trust anchor is not .dev/ca.crt"
pods_before=$(controller_pods)
[ "$(wc -l <<<"$pods_before")" -ge 3 ] || fail "expected the three controllers' pods, found: $pods_before"
step helm-upgrade
[ "$(identity)" = "$identity_before" ] || fail "the Helm upgrade changed the trust anchor or the issuer"
[ -z "$(comm -12 <(echo "$pods_before") <(controller_pods))" ] \
  || fail "the Helm upgrade did not replace every control-plane pod"
kind_tests tests/kind -k "control_plane or injected or mtls or check_with_proxies"
step helm-uninstall

if [ "$E2E_SKAFFOLD" = 1 ]; then
  if [ -n "$skaffold_build" ]; then
    echo "e2e-node: waiting for the skaffold build after $(elapsed)"
    wait "$skaffold_build" || { cat "$ARTIFACTS/skaffold-build.log" >&2; fail "building skaffold failed"; }
    skaffold_build=
  fi
  step skaffold-run
  kubectl -n "$NAMESPACE" get deploy -o jsonpath='{range .items[*]}{.spec.template.spec.containers[0].image}{"\n"}{end}' \
    | grep -v '^localhost:5000/gossamer/' && fail "skaffold deployed an image not from the node's registry"
  step skaffold-delete
  echo "e2e-node: the skaffold dev edit test after $(elapsed)"
  kind_tests tests/kind/test_skaffold_node.py
fi
echo "e2e-node: every phase passed after $(elapsed)"
