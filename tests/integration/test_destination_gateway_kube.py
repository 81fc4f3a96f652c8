"""Gateway API routes through the real destination process and the real kube-apiserver.

The destination starts while the Gateway API CRDs are absent and still serves policy (a
``policy.linkerd.io`` HTTPRoute reaches an open outbound stream). Once the CRDs (test
fixtures written from the Gateway API spec) are installed, a GRPCRoute reaches the same open
stream as gRPC routes with retries, and the destination writes route status: Accepted,
ResolvedRefs (BackendNotFound until the backend Service exists), NoMatchingParent.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from gossamer_api.proxy import outbound_pb2, outbound_pb2_grpc
from gossamer_destination.testing_cluster import DestinationProcess, apply_crds
from gossamer_kube.client import KubeClient
from gossamer_kube.errors import KubeApiError
from gossamer_kube.resources import (
    CUSTOMRESOURCEDEFINITIONS,
    GATEWAY_GRPCROUTES,
    GATEWAY_HTTPROUTES,
    HTTPROUTES,
    SERVICES,
)
from gossamer_kube.testing import KubeTestCluster

WAIT = 60.0
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gateway-api"
GATEWAY_CRDS = ("httproutes.gateway.networking.k8s.io", "grpcroutes.gateway.networking.k8s.io")
T = TypeVar("T")


def remove_gateway_crds(admin: Any) -> None:
    for name in GATEWAY_CRDS:
        try:
            admin.request("DELETE", CUSTOMRESOURCEDEFINITIONS.path(name=name))
        except KubeApiError as exc:
            if not exc.not_found:
                raise
    deadline = time.monotonic() + WAIT
    for name in GATEWAY_CRDS:
        while True:
            try:
                admin.request("GET", CUSTOMRESOURCEDEFINITIONS.path(name=name))
            except KubeApiError as exc:
                if exc.not_found:
                    break
                raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not deleted")
            time.sleep(0.1)


@pytest.fixture
def destination(kube_cluster: KubeTestCluster, tmp_path: Path) -> Iterator[DestinationProcess]:
    admin = kube_cluster.admin()
    apply_crds(admin)
    remove_gateway_crds(admin)
    proc = DestinationProcess(
        kube_cluster.kubeconfig,
        tmp_path / "destination.log",
        extra_env={"GOSSAMER_DESTINATION_CRD_RECHECK": "300ms"},
    )
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
        remove_gateway_crds(admin)


@pytest.fixture
async def channel(destination: DestinationProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(destination.target) as ch:
        yield ch


async def until(what: str, probe: Callable[[], Awaitable[T | None]], limit: float = WAIT) -> T:
    deadline = time.monotonic() + limit
    while True:
        value = await probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def next_matching(
    call: Any, what: str, predicate: Callable[[outbound_pb2.OutboundPolicy], bool]
) -> outbound_pb2.OutboundPolicy:
    deadline = time.monotonic() + WAIT
    while True:
        policy = await asyncio.wait_for(call.read(), max(0.1, deadline - time.monotonic()))
        if policy is grpc.aio.EOF:  # type: ignore[attr-defined]
            raise AssertionError(f"stream ended before {what}")
        if predicate(policy):
            return policy  # type: ignore[no-any-return]


async def open_watch(channel: grpc.aio.Channel, authority: str) -> tuple[Any, Any]:
    stub = outbound_pb2_grpc.OutboundPoliciesStub(channel)
    deadline = time.monotonic() + WAIT
    while True:
        call = stub.Watch(outbound_pb2.TrafficSpec(authority=authority))
        try:
            return call, await asyncio.wait_for(call.read(), WAIT)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def service(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"name": "grpc", "port": 80}]},
    }


def parent(name: str) -> dict[str, Any]:
    return {"group": "core", "kind": "Service", "name": name, "port": 80}


def conditions(route: dict[str, Any]) -> dict[str, tuple[str, str]] | None:
    parents = (route.get("status") or {}).get("parents") or []
    ours = [p for p in parents if p.get("controllerName") == "linkerd.io/policy-controller"]
    if not ours:
        return None
    return {c["type"]: (c["status"], c["reason"]) for c in ours[0]["conditions"]}


async def test_gateway_routes_without_crds_then_with_them_and_their_status(
    kube_cluster: KubeTestCluster,
    destination: DestinationProcess,
    channel: grpc.aio.Channel,
    kube_client: KubeClient,
    kube_namespace: str,
) -> None:
    ns = kube_namespace
    await kube_client.create(SERVICES, service("web"), ns)
    authority = f"web.{ns}.svc.cluster.local:80"
    call, first = await open_watch(channel, authority)
    assert first.protocol.WhichOneof("kind") == "detect"

    # Without the Gateway API CRDs, policy.linkerd.io routes are still served.
    await kube_client.create(
        HTTPROUTES,
        {
            "metadata": {"name": "legacy"},
            "spec": {
                "parentRefs": [parent("web")],
                "rules": [{"matches": [{"path": {"type": "Exact", "value": "/legacy"}}]}],
            },
        },
        ns,
    )
    policy = await next_matching(
        call,
        "policy HTTPRoute",
        lambda p: (
            p.protocol.detect.http1.routes[0].HasField("metadata")
            and p.protocol.detect.http1.routes[0].metadata.resource.name == "legacy"
        ),
    )
    assert policy.protocol.detect.http1.routes[0].metadata.resource.group == "policy.linkerd.io"
    legacy = await until(
        "policy HTTPRoute status",
        lambda: _status(kube_client, HTTPROUTES, "legacy", ns),
    )
    assert legacy == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}

    # The CRDs appear: the destination picks them up without a restart.
    await asyncio.to_thread(apply_crds, kube_cluster.admin(), FIXTURES)
    await until("GRPCRoute API", lambda: _served(kube_client, GATEWAY_GRPCROUTES, ns))
    grpc_route = {
        "metadata": {
            "name": "rpc",
            "annotations": {
                "retry.linkerd.io/grpc": "unavailable,cancelled",
                "retry.linkerd.io/limit": "3",
                "timeout.linkerd.io/request": "2s",
            },
        },
        "spec": {
            "parentRefs": [parent("web")],
            "rules": [
                {
                    "matches": [{"method": {"service": "echo.Echo", "method": "Say"}}],
                    "backendRefs": [
                        {"name": "web", "port": 80, "weight": 90},
                        {"name": "web-v2", "port": 80, "weight": 10},
                    ],
                }
            ],
        },
    }
    created = await kube_client.create(GATEWAY_GRPCROUTES, grpc_route, ns)
    policy = await next_matching(
        call, "GRPCRoute", lambda p: p.protocol.WhichOneof("kind") == "grpc"
    )
    (route,) = policy.protocol.grpc.routes
    assert route.metadata.resource.group == "gateway.networking.k8s.io"
    assert route.metadata.resource.kind == "GRPCRoute"
    (rule,) = route.rules
    assert (rule.matches[0].rpc.service, rule.matches[0].rpc.method) == ("echo.Echo", "Say")
    assert rule.retry.max_retries == 3
    assert rule.retry.conditions.unavailable
    assert rule.retry.conditions.cancelled
    assert not rule.retry.conditions.internal
    assert rule.timeouts.request.seconds == 2
    weights = [b.weight for b in rule.backends.random_available.backends]
    assert weights == [90, 10]

    # Status: accepted, but web-v2 does not exist yet.
    status = await until(
        "GRPCRoute BackendNotFound",
        lambda: _status(kube_client, GATEWAY_GRPCROUTES, "rpc", ns, "BackendNotFound"),
    )
    assert status["Accepted"] == ("True", "Accepted")
    stored = await kube_client.get(GATEWAY_GRPCROUTES, "rpc", ns)
    (entry,) = stored["status"]["parents"]
    assert entry["parentRef"] == parent("web")
    generation = created["metadata"]["generation"]
    assert all(c["observedGeneration"] == generation for c in entry["conditions"])
    assert "web-v2" in entry["conditions"][1]["message"]

    await kube_client.create(SERVICES, service("web-v2"), ns)
    status = await until(
        "GRPCRoute ResolvedRefs",
        lambda: _status(kube_client, GATEWAY_GRPCROUTES, "rpc", ns, "ResolvedRefs"),
    )
    assert status["ResolvedRefs"] == ("True", "ResolvedRefs")

    # A gateway HTTPRoute whose parent Service does not exist.
    await kube_client.create(
        GATEWAY_HTTPROUTES,
        {"metadata": {"name": "orphan"}, "spec": {"parentRefs": [parent("nope")]}},
        ns,
    )
    orphan = await until(
        "NoMatchingParent",
        lambda: _status(kube_client, GATEWAY_HTTPROUTES, "orphan", ns, "NoMatchingParent"),
    )
    assert orphan["Accepted"] == ("False", "NoMatchingParent")

    # Status is written per change, never in a loop: a handful of writes in all.
    written = re.search(
        r'gossamer_destination_route_status_writes_total\{result="written"\} (\d+)',
        destination.metrics(),
    )
    assert written is not None
    assert 4 <= int(written.group(1)) <= 8
    call.cancel()


async def _served(client: KubeClient, ref: Any, ns: str) -> bool | None:
    try:
        await client.list(ref, ns)
    except KubeApiError as exc:
        if exc.not_found:
            return None
        raise
    return True


async def _status(
    client: KubeClient, ref: Any, name: str, ns: str, reason: str | None = None
) -> dict[str, tuple[str, str]] | None:
    found = conditions(await client.get(ref, name, ns))
    if found is None:
        return None
    if reason is not None and reason not in {r for _, r in found.values()}:
        return None
    return found
