"""Routes with an EgressNetwork parent through the real destination and kube-apiserver.

Route status is written for EgressNetwork parents as for Services: an HTTPRoute and a TLSRoute
whose EgressNetwork does not exist yet say ``NoMatchingParent``; once it exists they are
``Accepted`` with resolved refs (a backendRef to the EgressNetwork is the original
destination). The TLSRoute reaches an open outbound ``Watch`` for an address the
EgressNetwork holds: the port becomes ``tls``, its hostnames SNI matches, with the
trafficPolicy as the last route.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from gossamer_api.proxy import net_pb2, outbound_pb2, outbound_pb2_grpc
from gossamer_destination.testing_cluster import DestinationProcess, apply_crds
from gossamer_destination.wire import ip_address
from gossamer_kube.client import KubeClient
from gossamer_kube.errors import KubeApiError
from gossamer_kube.resources import (
    EGRESSNETWORKS,
    GATEWAY_TLSROUTES,
    HTTPROUTES,
    ResourceRef,
)
from gossamer_kube.testing import KubeTestCluster

pytestmark = pytest.mark.kube

WAIT = 60.0
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gateway-api"
T = TypeVar("T")
EGRESS_PARENT = {"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": "world"}


@pytest.fixture
def destination(kube_cluster: KubeTestCluster, tmp_path: Path) -> Iterator[DestinationProcess]:
    admin = kube_cluster.admin()
    apply_crds(admin)
    apply_crds(admin, FIXTURES)
    proc = DestinationProcess(kube_cluster.kubeconfig, tmp_path / "destination.log")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


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


async def status(
    client: KubeClient, ref: ResourceRef, name: str, ns: str, reason: str
) -> dict[str, Any] | None:
    """Our status entry for the route once one of its conditions has ``reason``."""
    try:
        route = await client.get(ref, name, ns)
    except KubeApiError as exc:
        if exc.not_found:
            return None
        raise
    for entry in (route.get("status") or {}).get("parents") or ():
        if entry.get("controllerName") != "linkerd.io/policy-controller":
            continue
        if reason in {c["reason"] for c in entry["conditions"]}:
            return entry  # type: ignore[no-any-return]
    return None


def reasons(entry: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in entry["conditions"]}


async def test_egress_network_parents_get_route_status_and_tls_routes_reach_the_watch(
    channel: grpc.aio.Channel, kube_client: KubeClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    http_route = {
        "metadata": {"name": "allow-get"},
        "spec": {
            # Port 80 only: an HTTPRoute on the TLS port would keep it HTTP.
            "parentRefs": [{**EGRESS_PARENT, "port": 80}],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/get"}}]}],
        },
    }
    tls_route = {
        "metadata": {"name": "api"},
        "spec": {
            "parentRefs": [{**EGRESS_PARENT, "port": 443}],
            "hostnames": ["api.example.com", "*.cdn.example.com"],
            "rules": [{"backendRefs": [{**EGRESS_PARENT, "port": 443}]}],
        },
    }
    await kube_client.create(HTTPROUTES, http_route, ns)
    await until("TLSRoute API", lambda: _served(kube_client, GATEWAY_TLSROUTES, ns))
    await kube_client.create(GATEWAY_TLSROUTES, tls_route, ns)

    # No such EgressNetwork yet.
    for ref, name in ((HTTPROUTES, "allow-get"), (GATEWAY_TLSROUTES, "api")):
        entry = await until(
            f"{name} NoMatchingParent",
            lambda ref=ref, name=name: status(kube_client, ref, name, ns, "NoMatchingParent"),
        )
        assert entry["parentRef"]["kind"] == "EgressNetwork"
        assert reasons(entry)["Accepted"] == ("False", "NoMatchingParent")
        (accepted,) = [c for c in entry["conditions"] if c["type"] == "Accepted"]
        assert accepted["message"] == f"EgressNetwork {ns}/world not found"

    stub = outbound_pb2_grpc.OutboundPoliciesStub(channel)
    spec = outbound_pb2.TrafficSpec(
        source_workload=f'{{"ns":"{ns}","pod":"client"}}',
        addr=net_pb2.TcpAddress(ip=ip_address("203.0.113.7"), port=443),
    )
    call = stub.Watch(spec)
    first = await asyncio.wait_for(call.read(), WAIT)
    assert first.metadata.default == "egress-fallback"

    egress = {
        "metadata": {"name": "world"},
        "spec": {"trafficPolicy": "Deny", "networks": [{"cidr": "203.0.113.0/24"}]},
    }
    await kube_client.create(EGRESSNETWORKS, egress, ns)
    for ref, name in ((HTTPROUTES, "allow-get"), (GATEWAY_TLSROUTES, "api")):
        entry = await until(
            f"{name} Accepted",
            lambda ref=ref, name=name: status(kube_client, ref, name, ns, "Accepted"),
        )
        assert reasons(entry) == {
            "Accepted": ("True", "Accepted"),
            "ResolvedRefs": ("True", "ResolvedRefs"),
        }

    policy = await asyncio.wait_for(call.read(), WAIT)
    while policy.protocol.WhichOneof("kind") != "tls":
        policy = await asyncio.wait_for(call.read(), WAIT)
    api, fallback = policy.protocol.tls.routes
    assert (api.metadata.resource.kind, api.metadata.resource.name) == ("TLSRoute", "api")
    assert [m.WhichOneof("match") for m in api.snis] == ["exact", "suffix"]
    (weighted,) = api.rules[0].backends.random_available.backends
    assert weighted.backend.backend.forward.addr.port == 443
    assert fallback.metadata.default == "tls-egress-deny"
    assert fallback.rules[0].filters[0].HasField("forbidden")
    call.cancel()


async def _served(client: KubeClient, ref: ResourceRef, ns: str) -> bool | None:
    try:
        await client.list(ref, ns)
    except KubeApiError as exc:
        if exc.not_found:
            return None
        raise
    return True
