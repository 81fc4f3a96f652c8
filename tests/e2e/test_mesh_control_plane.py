"""Control-plane restarts end to end: the data plane keeps serving while they are down.

Destination and identity are killed (SIGKILL, by the pid local mode writes) during steady
meshed traffic. Proxies keep serving from their last discovery state and their current
certificates, so no request fails; local mode restarts each component, as a Deployment
would, and it answers ``/ready`` again. The client's proxy logs at info level, so the test
sees that its discovery streams really lost the destination service: a stream broke and at
least one reconnect attempt failed while the component was down (otherwise a restart
faster than the proxy's backoff would let the test pass without the proxy ever serving
with the control plane away).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from localmesh import LocalMeshHandle, echo_app, service_url

pytestmark = pytest.mark.netns

NS = "mesh-cp"


@pytest.fixture(scope="module")
def mesh(local_mesh: LocalMeshHandle) -> Iterator[LocalMeshHandle]:
    local_mesh.deploy(
        NS,
        echo_app(NS, "server", replicas=2),
        echo_app(
            NS,
            "client",
            service=False,
            # Info-level events, as JSON lines (the injector's default format is Linkerd's
            # plain text).
            annotations={
                "config.linkerd.io/proxy-log-level": "info",
                "config.linkerd.io/proxy-log-format": "json",
            },
        ),
        ready={"server": 2, "client": 1},
    )
    yield local_mesh
    local_mesh.delete_namespace(NS)


def _client(mesh: LocalMeshHandle) -> dict[str, Any]:
    (pod,) = mesh.pods(NS, "app=client")
    return pod


def test_killing_destination_and_identity_fails_no_request(mesh: LocalMeshHandle) -> None:
    url = service_url(NS, "server")
    warm = mesh.load(_client(mesh), url, 50, concurrency=2)
    assert warm["ok"] == 50, warm

    run = mesh.start_load(_client(mesh), url, 6000, concurrency=4, rps=50, max_seconds=120)
    restarted = {}
    down: dict[str, tuple[float, float]] = {}
    try:
        time.sleep(2)
        for component in ("destination", "identity"):
            killed_at = time.time()
            restarted[component] = _kill_and_wait_back(mesh, component, limit=60)
            down[component] = (killed_at, time.time())
        time.sleep(3)  # traffic after both came back
    finally:
        summary = run.stop()
    assert summary["sent"] >= 100, summary
    assert summary["ok"] == summary["sent"], {k: summary[k] for k in ("statuses", "errors")}
    assert set(summary["pods"]) == {p["metadata"]["name"] for p in mesh.pods(NS, "app=server")}
    for component, (old, new) in restarted.items():
        assert new != old, f"{component} was not restarted"
        assert mesh.control_plane_ready(component)
    failures = _stream_failures(mesh.proxy_log_events(_client(mesh)), *down["destination"])
    assert any(len(times) >= 2 for times in failures.values()), (
        "no discovery stream of the client's proxy broke and then failed to reconnect while "
        f"destination was down: {failures}"
    )


def _stream_failures(
    events: list[dict[str, Any]], since: float, until: float
) -> dict[str, list[float]]:
    """Per control-plane watch, when its stream failed (broke, or a reconnect was refused)."""
    failed: dict[str, list[float]] = {}
    for event in events:
        if event.get("event") not in {"control_stream_error", "control_stream_timeout"}:
            continue
        at = dt.datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp()
        if since <= at <= until:
            failed.setdefault(str(event.get("watch")), []).append(at)
    return failed


def _kill_and_wait_back(mesh: LocalMeshHandle, component: str, limit: float) -> tuple[int, int]:
    """SIGKILL the component; wait for a new pid that answers /ready. Returns (old, new)."""
    old = mesh.control_plane_pid(component)
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.5)
        new = mesh.control_plane_pid(component)
        if new != old and mesh.control_plane_ready(component):
            return old, new
    raise AssertionError(f"{component} did not come back ready within {limit}s")
