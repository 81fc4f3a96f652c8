"""Traffic splits end to end: HTTPRoute weighted backends, and a canary rollout by weights.

``policy.linkerd.io/v1beta3`` HTTPRoutes whose parent is a Service split the requests for it
across two other Services (versions ``a`` and ``b``); the client's proxy applies the weights
per request, so counts per version over many requests must match them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from localmesh import LocalMeshHandle, converge, echo_app, service_url

pytestmark = pytest.mark.netns

NS = "mesh-split"


def apex(name: str) -> str:
    """A Service with a ClusterIP for clients to call; its route decides who answers."""
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {NS}}}
spec:
  selector: {{app: backend-a}}
  ports: [{{name: http, port: 8080, targetPort: http}}]
"""


def route(name: str, parent: str, weight_a: int, weight_b: int) -> str:
    return f"""
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {{name: {name}, namespace: {NS}}}
spec:
  parentRefs:
    - {{group: core, kind: Service, name: {parent}, port: 8080}}
  rules:
    - backendRefs:
        - {{name: backend-a, port: 8080, weight: {weight_a}}}
        - {{name: backend-b, port: 8080, weight: {weight_b}}}
"""


@pytest.fixture(scope="module")
def mesh(local_mesh: LocalMeshHandle) -> Iterator[LocalMeshHandle]:
    local_mesh.deploy(
        NS,
        echo_app(NS, "backend-a", env={"VERSION": "a"}),
        echo_app(NS, "backend-b", env={"VERSION": "b"}),
        apex("split"),
        apex("canary"),
        route("split", "split", 90, 10),
        route("canary", "canary", 100, 0),
        echo_app(NS, "client", service=False),
        ready={"backend-a": 1, "backend-b": 1, "client": 1},
    )
    yield local_mesh
    local_mesh.delete_namespace(NS)


def _client(mesh: LocalMeshHandle) -> dict[str, Any]:
    (pod,) = mesh.pods(NS, "app=client")
    return pod


def _share_b(summary: dict[str, Any]) -> float:
    versions: dict[str, int] = summary["versions"]
    return versions.get("b", 0) / max(1, sum(versions.values()))


def test_ninety_ten_split_within_three_percent(mesh: LocalMeshHandle) -> None:
    url = service_url(NS, "split")
    warm = converge(
        lambda: mesh.load(_client(mesh), url, 100, concurrency=4),
        lambda s: "b" in s["versions"],
        limit=60,
    )
    assert "b" in warm["versions"], f"the split never took effect: {warm['versions']}"

    summary = mesh.load(_client(mesh), url, 5000, concurrency=8, max_seconds=240)
    assert summary["ok"] == 5000, summary["statuses"]
    assert set(summary["versions"]) == {"a", "b"}
    assert abs(_share_b(summary) - 0.10) <= 0.03, summary["versions"]


def _near(share: float) -> Callable[[dict[str, Any]], bool]:
    return lambda summary: abs(_share_b(summary) - share) <= 0.1


def test_canary_shift_zero_fifty_hundred(mesh: LocalMeshHandle) -> None:
    url = service_url(NS, "canary")

    def burst(count: int = 200) -> dict[str, Any]:
        return mesh.load(_client(mesh), url, count, concurrency=4, max_seconds=60)

    stages = ((100, 0, 0.0), (50, 50, 0.5), (0, 100, 1.0))
    for weight_a, weight_b, wanted in stages:
        mesh.apply(route("canary", "canary", weight_a, weight_b))
        settled = converge(burst, _near(wanted), limit=60)
        assert abs(_share_b(settled) - wanted) <= 0.1, (weight_b, settled["versions"])
        summary = burst(600)
        assert summary["ok"] == 600, summary["statuses"]
        if wanted in (0.0, 1.0):
            assert _share_b(summary) == wanted, (weight_b, summary["versions"])
        else:
            assert abs(_share_b(summary) - wanted) <= 0.07, (weight_b, summary["versions"])
