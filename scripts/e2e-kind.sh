#!/usr/bin/env bash
# make e2e: a kind cluster, the five images (and the demo's) loaded into it, the CRDs and the
# control plane installed with the Helm chart, the demo app deployed, then tests/kind.
# Logs and cluster state are collected on failure; the cluster is always deleted.
#
# Needs docker, kind, kubectl and helm (scripts/helm-bin.sh builds helm when Go is present).
# Environment: KIND_NODE_IMAGE (pinned default below), KEEP_CLUSTER=1 to keep it for debugging,
# E2E_ARTIFACTS (default: e2e-artifacts/) for the collected logs.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

CLUSTER=${KIND_CLUSTER:-gossamer-e2e}
CONTEXT="kind-$CLUSTER"
NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.30.13}
REGISTRY=gossamer
TAG=${TAG:-e2e}
NAMESPACE=gossamer
ARTIFACTS=${E2E_ARTIFACTS:-$here/e2e-artifacts}
SERVICES=(destination identity injector proxy proxy-init)

die() { echo "e2e-kind: $*" >&2; exit 2; }

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed; make e2e needs docker, kind and kubectl (this machine can run 'make test' instead)"
done
docker info >/dev/null 2>&1 || die "docker is installed but the daemon does not answer (is it running, may this user use it?)"
HELM=${HELM:-$(command -v helm || bash scripts/helm-bin.sh | tail -n1)}
[ -x "$HELM" ] || die "helm not found and scripts/helm-bin.sh could not build it"
command -v uv >/dev/null 2>&1 || die "uv is not installed (make setup installs it)"

collect() {
  echo "e2e-kind: collecting logs into $ARTIFACTS" >&2
  mkdir -p "$ARTIFACTS"
  kubectl --context "$CONTEXT" get all,events -A -o wide >"$ARTIFACTS/cluster.txt" 2>&1 || true
  kubectl --context "$CONTEXT" describe pods -A >"$ARTIFACTS/pods-describe.txt" 2>&1 || true
  for ns in "$NAMESPACE" demo; do
    for pod in $(kubectl --context "$CONTEXT" -n "$ns" get pods -o name 2>/dev/null); do
      kubectl --context "$CONTEXT" -n "$ns" logs "$pod" --all-containers --prefix \
        >"$ARTIFACTS/$ns-${pod#pod/}.log" 2>&1 || true
    done
  done
  uv run --frozen gossamer check -L "$NAMESPACE" --proxy >"$ARTIFACTS/check.txt" 2>&1 || true
  kind export logs "$ARTIFACTS/kind" --name "$CLUSTER" >/dev/null 2>&1 || true
}

cleanup() {
  status=$?
  if [ "$status" -ne 0 ]; then collect; fi
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
  exit "$status"
}

echo "e2e-kind: creating cluster $CLUSTER ($NODE_IMAGE)"
kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --wait 120s
trap cleanup EXIT

echo "e2e-kind: building images"
# Plain docker build (not `make images`): the images must land in the local image store for
# `kind load`, which a buildx docker-container builder would not do without --load.
for s in "${SERVICES[@]}"; do
  docker build -f "services/$s/Dockerfile" -t "$REGISTRY/$s:$TAG" \
    --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" .
done
docker build -t "$REGISTRY/demo-app:dev" examples/demo
for s in "${SERVICES[@]}"; do kind load docker-image --name "$CLUSTER" "$REGISTRY/$s:$TAG"; done
kind load docker-image --name "$CLUSTER" "$REGISTRY/demo-app:dev"

echo "e2e-kind: installing with the Helm chart"
certs=$(mktemp -d)
uv run --frozen gossamer install -L "$NAMESPACE" --write-identity-dir "$certs" >/dev/null
"$HELM" --kube-context "$CONTEXT" upgrade --install gossamer-crds charts/gossamer-crds \
  -n "$NAMESPACE" --create-namespace --wait
"$HELM" --kube-context "$CONTEXT" upgrade --install gossamer charts/gossamer \
  -n "$NAMESPACE" --create-namespace --wait --timeout 5m \
  --set image.registry="$REGISTRY" --set image.tag="$TAG" \
  --set-file identityTrustAnchorsPEM="$certs/ca.crt" \
  --set-file identity.issuer.tls.crtPEM="$certs/issuer.crt" \
  --set-file identity.issuer.tls.keyPEM="$certs/issuer.key"
rm -rf "$certs"
kubectl --context "$CONTEXT" config use-context "$CONTEXT" >/dev/null
uv run --frozen gossamer check -L "$NAMESPACE"

echo "e2e-kind: deploying the demo"
kubectl --context "$CONTEXT" apply -f examples/demo/k8s/
kubectl --context "$CONTEXT" -n demo rollout status deploy --timeout 300s

echo "e2e-kind: running tests/kind"
GOSSAMER_KIND_CONTEXT="$CONTEXT" GOSSAMER_NAMESPACE="$NAMESPACE" \
  uv run --frozen pytest tests/kind -x -q -p no:cacheprovider
