"""Load balancing end to end: peak-EWMA avoids a slow endpoint, a deleted endpoint is ejected.

The client's proxy balances requests (not connections) over the endpoints that discovery
sends, choosing by power of two choices over peak-EWMA latency. Answers name the pod that
served them, so the client counts the split itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from localmesh import LocalMeshHandle, echo_app, service_url

pytestmark = pytest.mark.netns

NS = "mesh-balance"
SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: ewma, namespace: mesh-balance}
spec:
  selector: {svc: ewma}
  ports: [{name: http, port: 8080, targetPort: http}]
"""


@pytest.fixture(scope="module")
def mesh(local_mesh: LocalMeshHandle) -> Iterator[LocalMeshHandle]:
    local_mesh.deploy(
        NS,
        echo_app(NS, "ewma-fast", replicas=2, labels={"svc": "ewma"}, service=False),
        # 1 s, far above what a fast echo costs even on a busy 2-core machine: at 200 ms the
        # fast endpoints' own latency under load (times their pending requests) came close
        # enough that the slow share measured the machine's load, not the balancer.
        echo_app(
            NS, "ewma-slow", args=["--delay-ms", "1000"], labels={"svc": "ewma"}, service=False
        ),
        SERVICE,
        echo_app(NS, "victim", replicas=3),
        echo_app(NS, "client", service=False),
        ready={"ewma-fast": 2, "ewma-slow": 1, "victim": 3, "client": 1},
    )
    yield local_mesh
    local_mesh.delete_namespace(NS)


def _client(mesh: LocalMeshHandle) -> dict[str, Any]:
    (pod,) = mesh.pods(NS, "app=client")
    return pod


def test_a_slow_endpoint_gets_under_a_fifth_of_the_requests(mesh: LocalMeshHandle) -> None:
    url = service_url(NS, "ewma")
    (slow,) = [p["metadata"]["name"] for p in mesh.pods(NS, "app=ewma-slow")]
    fast = {p["metadata"]["name"] for p in mesh.pods(NS, "app=ewma-fast")}
    # Warm-up: discovery has all three endpoints and the balancer has seen their latency.
    warm = mesh.load(_client(mesh), url, 150, concurrency=4, max_seconds=60)
    assert warm["ok"] == 150, warm

    summary = mesh.load(_client(mesh), url, 600, concurrency=4, max_seconds=90)
    assert summary["ok"] == 600, summary
    pods = summary["pods"]
    assert set(pods) <= fast | {slow}, pods
    assert fast <= set(pods), f"a fast endpoint got nothing: {pods}"
    assert pods.get(slow, 0) < 0.20 * 600, f"the slow endpoint got {pods.get(slow, 0)}: {pods}"


def test_a_deleted_endpoint_is_ejected_with_at_most_one_percent_failed(
    mesh: LocalMeshHandle,
) -> None:
    url = service_url(NS, "victim")
    before = {p["metadata"]["name"] for p in mesh.wait_ready(NS, "app=victim", 3)}
    run = mesh.start_load(
        _client(mesh), url, 2000, concurrency=4, rps=100, max_seconds=40, events=True
    )
    try:
        time.sleep(5)
        victim = sorted(before)[0]
        mesh.kubectl("delete", "pod", victim, "-n", NS, "--wait=false")
        gone_at = _wait_gone(mesh, victim, limit=30)
        time.sleep(3)  # traffic after the pod is gone
    finally:
        summary = run.stop()
    failed = summary["sent"] - summary["ok"]
    assert summary["sent"] >= 500, summary
    assert failed <= 0.01 * summary["sent"], {k: summary[k] for k in ("statuses", "errors")}
    events = summary["events"]
    assert any(pod == victim for t, pod, _ in events if t < gone_at), "victim never served"
    late = [e for e in events if e[0] > gone_at + 0.5 and e[1] == victim]
    assert not late, f"{len(late)} answers from the deleted pod after it was gone"


def _wait_gone(mesh: LocalMeshHandle, name: str, limit: float) -> float:
    """Poll until the pod object is gone; returns the (host) time it was first seen gone."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if name not in {p["metadata"]["name"] for p in mesh.pods(NS, "app=victim")}:
            return time.time()
        time.sleep(0.3)
    raise AssertionError(f"pod {name} still exists after {limit}s")
