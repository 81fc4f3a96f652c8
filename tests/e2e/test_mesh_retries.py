"""Retries end to end: a ServiceProfile's retryable route hides a 30%-failing backend.

The profile marks ``GET /retry/...`` retryable with a retry budget of 50% (plus 5 retries a
second). Through the client's proxy nearly every request succeeds, and the extra attempts the
servers see stay within what the budget allows. Another path of the same service is not
retryable and shows the backend's real failure rate.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from localmesh import LocalMeshHandle, converge, counter, echo_app, identity, service_url

pytestmark = pytest.mark.netns

NS = "mesh-retry"
RETRY_RATIO = 0.5
MIN_RETRIES_PER_SECOND = 5
TTL_SECONDS = 10
PROFILE = f"""
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata:
  name: flaky.{NS}.svc.cluster.local
  namespace: {NS}
spec:
  routes:
    - name: GET /retry
      condition: {{method: GET, pathRegex: /retry/.*}}
      isRetryable: true
  retryBudget:
    retryRatio: {RETRY_RATIO}
    minRetriesPerSecond: {MIN_RETRIES_PER_SECOND}
    ttl: {TTL_SECONDS}s
"""


@pytest.fixture(scope="module")
def mesh(local_mesh: LocalMeshHandle) -> Iterator[LocalMeshHandle]:
    local_mesh.deploy(
        NS,
        echo_app(NS, "flaky", replicas=2, args=["--failure-rate", "0.3"]),
        echo_app(NS, "client", service=False),
        PROFILE,
        ready={"flaky": 2, "client": 1},
    )
    yield local_mesh
    local_mesh.delete_namespace(NS)


def _client(mesh: LocalMeshHandle) -> dict[str, Any]:
    (pod,) = mesh.pods(NS, "app=client")
    return pod


def _served(mesh: LocalMeshHandle) -> float:
    """Requests from the client that the servers' proxies accepted (each attempt counts)."""
    client_id = identity(NS, "client")
    return sum(
        counter(mesh.metrics(p), "request_total", direction="inbound", client_id=client_id)
        for p in mesh.pods(NS, "app=flaky")
    )


def test_retryable_route_succeeds_within_the_budget(mesh: LocalMeshHandle) -> None:
    url = service_url(NS, "flaky", "/retry/item")

    def burst() -> dict[str, Any]:
        return mesh.load(_client(mesh), url, 100, concurrency=4, max_seconds=60)

    # The profile reaches the client's proxy: retries start to hide the failures.
    warm = converge(burst, lambda s: s["ok"] >= 97, limit=60)
    assert warm["ok"] >= 97, f"the retryable route never took effect: {warm['statuses']}"

    before = _served(mesh)
    summary = mesh.load(_client(mesh), url, 500, concurrency=4, max_seconds=120)
    served = _served(mesh) - before

    assert summary["sent"] == 500, summary
    assert summary["ok"] >= 0.99 * 500, summary["statuses"]
    retries = served - summary["sent"]
    assert retries > 0.1 * 500, f"hardly any retries ({retries}) against a 30% failure rate"
    allowed = RETRY_RATIO * 500 + MIN_RETRIES_PER_SECOND * (summary["seconds"] + TTL_SECONDS)
    assert retries <= allowed, f"{retries} retries for 500 requests; budget allows {allowed}"


def test_a_route_outside_the_profile_is_not_retried(mesh: LocalMeshHandle) -> None:
    before = _served(mesh)
    summary = mesh.load(
        _client(mesh), service_url(NS, "flaky", "/plain"), 300, concurrency=4, max_seconds=60
    )
    served = _served(mesh) - before
    assert summary["sent"] == 300
    # 30% failing with no retry: ~90 failures (binomial sd ~8), and one attempt per request.
    assert 0.55 * 300 <= summary["ok"] <= 0.85 * 300, summary["statuses"]
    assert set(summary["statuses"]) <= {"200", "500"}, summary["statuses"]
    assert served == summary["sent"]
