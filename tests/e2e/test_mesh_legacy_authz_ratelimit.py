"""Legacy ServerAuthorization and HTTPLocalRateLimitPolicy end to end.

A ``Server`` (labelled ``tier: legacy``) guards the ``http`` port; it has no
AuthorizationPolicy, only a ``ServerAuthorization`` (``policy.linkerd.io/v1beta1``) that
selects it by label and admits the ``allowed`` ServiceAccount over mesh TLS. An
``HTTPLocalRateLimitPolicy`` on the Server limits each client identity to one request a
second. The destination serves both in the inbound policy; the server's proxy then answers
the ``denied`` client 403 and the ``allowed`` client 200 until its budget is spent, then
429 with ``l5d-proxy-error``, counted in ``inbound_http_local_ratelimit_total``. Probes from
the node (no identity, a budget of their own) keep the pod Ready.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from localmesh import LocalMeshHandle, converge, counter, echo_app, service_url

pytestmark = pytest.mark.netns

NS = "mesh-legacy"
POLICY = f"""
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {{name: legacy-http, namespace: {NS}, labels: {{tier: legacy}}}}
spec:
  podSelector: {{matchLabels: {{app: guarded}}}}
  port: http
  proxyProtocol: HTTP/1
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {{name: legacy-allowed, namespace: {NS}}}
spec:
  server:
    selector: {{matchLabels: {{tier: legacy}}}}
  client:
    meshTLS:
      serviceAccounts:
        - {{name: allowed}}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: {{name: legacy-rl, namespace: {NS}}}
spec:
  targetRef: {{group: policy.linkerd.io, kind: Server, name: legacy-http}}
  identity: {{requestsPerSecond: 1}}
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


def test_server_authorization_admits_and_rate_limit_refuses(mesh: LocalMeshHandle) -> None:
    url = service_url(NS, "guarded")

    def denied() -> dict[str, Any]:
        return mesh.load(_pod(mesh, "denied"), url, 10, concurrency=2)

    refused = converge(denied, lambda s: s["statuses"] == {"403": 10}, limit=60)
    assert refused["statuses"] == {"403": 10}, refused

    def allowed() -> dict[str, Any]:
        return mesh.load(_pod(mesh, "allowed"), url, 20, concurrency=2)

    # 20 requests within far less than 20 s, one a second allowed: most are refused.
    limited = converge(allowed, lambda s: "429" in s["statuses"], limit=60)
    assert set(limited["statuses"]) <= {"200", "429"}, limited
    assert limited["statuses"].get("429", 0) >= 1, limited

    metrics = mesh.metrics(_pod(mesh, "guarded"))
    assert (
        counter(
            metrics,
            "inbound_http_authz_allow_total",
            authz_kind="serverauthorization",
            authz_name="legacy-allowed",
        )
        >= 1
    )
    assert (
        counter(
            metrics,
            "inbound_http_local_ratelimit_total",
            ratelimit_name="legacy-rl",
            ratelimit_scope="identity",
        )
        >= limited["statuses"]["429"]
    )
    assert counter(metrics, "inbound_http_authz_deny_total") >= 10
    mesh.wait_ready(NS, "app=guarded", 1, limit=10)
