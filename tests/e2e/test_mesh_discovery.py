"""Discovery end to end: scaling and rolling updates reach the client's proxy without errors.

The destination service follows EndpointSlices; the client's proxy must add new endpoints,
drop removed ones, and, during a rolling update of an app that drains on SIGTERM (as
Kubernetes apps are expected to), lose no request at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from localmesh import LocalMeshHandle, converge, echo_app, service_url

pytestmark = pytest.mark.netns

NS = "mesh-discovery"


@pytest.fixture(scope="module")
def mesh(local_mesh: LocalMeshHandle) -> Iterator[LocalMeshHandle]:
    local_mesh.deploy(
        NS,
        echo_app(NS, "scaled", replicas=3, env={"DRAIN_MS": "2000"}),
        echo_app(NS, "rolling", replicas=3, env={"VERSION": "v1", "DRAIN_MS": "3000"}),
        echo_app(NS, "client", service=False),
        ready={"scaled": 3, "rolling": 3, "client": 1},
    )
    yield local_mesh
    local_mesh.delete_namespace(NS)


def _client(mesh: LocalMeshHandle) -> dict[str, Any]:
    (pod,) = mesh.pods(NS, "app=client")
    return pod


def _names(pods: list[dict[str, Any]]) -> set[str]:
    return {p["metadata"]["name"] for p in pods}


def test_scale_up_and_down_every_live_pod_and_only_those(mesh: LocalMeshHandle) -> None:
    url = service_url(NS, "scaled")

    def burst() -> dict[str, Any]:
        return mesh.load(_client(mesh), url, 200, concurrency=4, max_seconds=60)

    for replicas in (3, 5, 1):
        mesh.kubectl("scale", "deployment/scaled", f"--replicas={replicas}", "-n", NS)
        live = _names(mesh.wait_ready(NS, "app=scaled", replicas, limit=180))
        summary = converge(burst, _answered_by(live), limit=60)
        assert summary["ok"] == summary["sent"], (replicas, summary)
        assert set(summary["pods"]) == live, (
            f"{replicas} replicas: wanted answers from exactly {sorted(live)}, "
            f"got {summary['pods']}"
        )
    # Once converged, a removed pod gets nothing: the last burst came from the one survivor.
    final = burst()
    assert final["ok"] == 200, final
    assert set(final["pods"]) == live, final


def _answered_by(pods: set[str]) -> Callable[[dict[str, Any]], bool]:
    return lambda summary: set(summary["pods"]) == pods


def test_rolling_update_loses_no_request(mesh: LocalMeshHandle) -> None:
    url = service_url(NS, "rolling")
    old = _names(mesh.wait_ready(NS, "app=rolling", 3))
    run = mesh.start_load(
        _client(mesh), url, 6000, concurrency=4, rps=50, max_seconds=120, events=True
    )
    try:
        time.sleep(3)
        mesh.kubectl("set", "env", "deployment/rolling", "VERSION=v2", "-n", NS)
        mesh.kubectl("rollout", "status", "deployment/rolling", "-n", NS, "--timeout=100s")
        new = _names(mesh.wait_ready(NS, "app=rolling", 3, limit=100))
        time.sleep(3)  # steady traffic on the new pods
    finally:
        summary = run.stop()
    assert not old & new
    assert summary["sent"] >= 200, summary
    assert summary["ok"] == summary["sent"], {k: summary[k] for k in ("statuses", "errors")}
    assert {"v1", "v2"} <= set(summary["versions"]), summary["versions"]
    tail = summary["events"][-50:]
    assert {pod for _, pod, _ in tail} <= new, "old pods still answered after the rollout"
