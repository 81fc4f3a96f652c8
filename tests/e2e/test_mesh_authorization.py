"""Authorization end to end: only the ServiceAccount a MeshTLSAuthentication names gets in.

A ``Server`` selects the guarded pods' ``http`` port, and an ``AuthorizationPolicy`` on it
requires a ``MeshTLSAuthentication`` naming the ``allowed`` ServiceAccount. The server's
inbound proxy authorizes each request by the client's mTLS identity: the ``allowed`` client
gets 200, the ``denied`` one 403, and the pod's readiness probe (from the node, without
identity) keeps working through the probe route.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from localmesh import LocalMeshHandle, converge, counter, echo_app, service_url

pytestmark = pytest.mark.netns

NS = "mesh-authz"
POLICY = f"""
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {{name: guarded-http, namespace: {NS}}}
spec:
  podSelector: {{matchLabels: {{app: guarded}}}}
  port: http
  proxyProtocol: HTTP/1
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {{name: only-allowed, namespace: {NS}}}
spec:
  identityRefs:
    - {{kind: ServiceAccount, name: allowed}}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: guarded-allowed, namespace: {NS}}}
spec:
  targetRef: {{group: policy.linkerd.io, kind: Server, name: guarded-http}}
  requiredAuthenticationRefs:
    - {{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: only-allowed}}
"""


@pytest.fixture(scope="module")
def mesh(local_mesh: LocalMeshHandle) -> Iterator[LocalMeshHandle]:
    local_mesh.deploy(
        NS,
        echo_app(NS, "guarded"),
        echo_app(NS, "allowed", service=False),
        echo_app(NS, "denied", service=False),
        ready={"guarded": 1, "allowed": 1, "denied": 1},
    )
    local_mesh.apply(POLICY)
    yield local_mesh
    local_mesh.delete_namespace(NS)


def _pod(mesh: LocalMeshHandle, app: str) -> dict[str, Any]:
    (pod,) = mesh.pods(NS, f"app={app}")
    return pod


def test_only_the_allowed_service_account_gets_through(mesh: LocalMeshHandle) -> None:
    url = service_url(NS, "guarded")

    def denied() -> dict[str, Any]:
        return mesh.load(_pod(mesh, "denied"), url, 20, concurrency=2)

    # The policy reaches the server's proxy: the other client starts getting 403.
    refused = converge(denied, lambda s: s["statuses"] == {"403": 20}, limit=60)
    assert refused["statuses"] == {"403": 20}, refused

    allowed = mesh.load(_pod(mesh, "allowed"), url, 20, concurrency=2)
    assert allowed["statuses"] == {"200": 20}, allowed

    metrics = mesh.metrics(_pod(mesh, "guarded"))
    assert counter(metrics, "inbound_http_authz_deny_total") >= 20
    assert counter(metrics, "inbound_http_authz_allow_total", authz_name="guarded-allowed") >= 20
    # Probes from the node (no identity) still pass: the pod stays Ready.
    mesh.wait_ready(NS, "app=guarded", 1, limit=10)
