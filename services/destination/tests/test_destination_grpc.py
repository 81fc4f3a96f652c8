"""The gRPC APIs end to end over loopback, fed by in-memory informer sources."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from gossamer_api.proxy import (
    destination_pb2,
    destination_pb2_grpc,
    inbound_pb2,
    inbound_pb2_grpc,
    net_pb2,
    outbound_pb2,
    outbound_pb2_grpc,
)
from gossamer_destination import testing as t
from gossamer_destination.app import DestinationApp
from gossamer_destination.settings import DestinationSettings
from gossamer_destination.testing import MemorySource, memory_sources
from gossamer_destination.wire import ip_address, ip_from_proto

TIMEOUT = 5.0


class Harness:
    def __init__(self, app: DestinationApp, sources: dict[str, MemorySource]) -> None:
        self.app = app
        self.sources = sources
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
        self.dst = destination_pb2_grpc.DestinationStub(self.channel)
        self.inbound = inbound_pb2_grpc.InboundServerPoliciesStub(self.channel)
        self.outbound = outbound_pb2_grpc.OutboundPoliciesStub(self.channel)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    pods = [t.pod(f"web-{i}", f"10.1.0.{i}") for i in (1, 2)]
    sources = memory_sources(
        t.namespace("ns"),
        t.service("web"),
        t.service("ext", type="ExternalName", externalName="example.com", cluster_ip=""),
        t.service("empty", cluster_ip="10.96.0.11"),
        t.endpoint_slice("web", [("10.1.0.1", "web-1"), ("10.1.0.2", "web-2")]),
        *pods,
    )
    settings = DestinationSettings(
        grpc_addr="127.0.0.1:0", policy_addr="127.0.0.1:0", admin_addr="127.0.0.1:0"
    )
    app = DestinationApp(settings, dict(sources))  # type: ignore[arg-type]
    await asyncio.wait_for(app.start(), TIMEOUT)
    h = Harness(app, sources)
    try:
        yield h
    finally:
        await h.channel.close()
        await app.stop(grace=0)


async def read(call: Any) -> Any:
    return await asyncio.wait_for(call.read(), TIMEOUT)


def addrs(update: destination_pb2.Update) -> list[tuple[str, int]]:
    kind = update.WhichOneof("update")
    items = update.add.addrs if kind == "add" else update.remove.addrs
    return sorted(
        (
            ip_from_proto(a.addr.ip if kind == "add" else a.ip),
            a.addr.port if kind == "add" else a.port,
        )
        for a in items
    )


async def test_get_streams_initial_set_then_adds_and_removes(harness: Harness) -> None:
    call = harness.dst.Get(destination_pb2.GetDestination(path="web.ns.svc.cluster.local:80"))
    first = await read(call)
    assert first.WhichOneof("update") == "add"
    assert dict(first.add.metric_labels) == {"service": "web", "namespace": "ns"}
    assert addrs(first) == [("10.1.0.1", 8080), ("10.1.0.2", 8080)]
    harness.sources["pods"].apply(t.pod("web-3", "10.1.0.3"))
    harness.sources["endpointslices"].apply(
        t.endpoint_slice("web", [("10.1.0.2", "web-2"), ("10.1.0.3", "web-3")])
    )
    updates = [await read(call), await read(call)]
    kinds = {u.WhichOneof("update"): addrs(u) for u in updates}
    assert kinds == {"remove": [("10.1.0.1", 8080)], "add": [("10.1.0.3", 8080)]}
    added = next(u for u in updates if u.WhichOneof("update") == "add").add.addrs[0]
    assert added.tls_identity.dns_like_identity.name.startswith("web.ns.serviceaccount")
    harness.sources["services"].remove("ns", "web")
    gone = await read(call)
    assert gone.WhichOneof("update") == "remove"
    assert addrs(gone) == [("10.1.0.2", 8080), ("10.1.0.3", 8080)]
    harness.sources["services"].apply(t.service("web"))
    back = await read(call)
    assert addrs(back) == [("10.1.0.2", 8080), ("10.1.0.3", 8080)]
    call.cancel()


async def test_many_streams_share_one_topic_and_see_identical_updates(harness: Harness) -> None:
    calls = [
        harness.dst.Get(destination_pb2.GetDestination(path="web.ns.svc.cluster.local:80"))
        for _ in range(20)
    ]
    for c in calls:
        await read(c)
    topics_before = len(harness.app.api.registry)
    harness.sources["endpointslices"].apply(t.endpoint_slice("web", [("10.1.0.1", "web-1")]))
    got = [await read(c) for c in calls]
    assert {g.SerializeToString() for g in got} == {got[0].SerializeToString()}
    assert topics_before == 1
    for c in calls:
        c.cancel()


async def test_get_errors(harness: Harness) -> None:
    cases = {
        "missing.ns.svc.cluster.local:80": grpc.StatusCode.NOT_FOUND,
        "ext.ns.svc.cluster.local:80": grpc.StatusCode.INVALID_ARGUMENT,
        "10.1.0.1:80": grpc.StatusCode.INVALID_ARGUMENT,
        "example.com:80": grpc.StatusCode.INVALID_ARGUMENT,
    }
    for path, code in cases.items():
        call = harness.dst.Get(destination_pb2.GetDestination(path=path))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await read(call)
        assert err.value.code() == code, path


async def test_empty_service_says_no_endpoints_exists(harness: Harness) -> None:
    call = harness.dst.Get(destination_pb2.GetDestination(path="empty.ns.svc.cluster.local:80"))
    first = await read(call)
    assert first.WhichOneof("update") == "no_endpoints"
    assert first.no_endpoints.exists
    call.cancel()


async def test_get_profile_updates_without_duplicates(harness: Harness) -> None:
    call = harness.dst.GetProfile(
        destination_pb2.GetDestination(path="web.ns.svc.cluster.local:80", context_token="ns:ns")
    )
    first = await read(call)
    assert first.fully_qualified_name == "web.ns.svc.cluster.local"
    assert not first.routes
    # An unrelated change must not produce a message.
    harness.sources["pods"].apply(t.pod("web-9", "10.1.0.9"))
    sp = {
        "kind": "ServiceProfile",
        "metadata": {"name": "web.ns.svc.cluster.local", "namespace": "ns"},
        "spec": {
            "routes": [
                {"name": "bad", "condition": {"pathRegex": "(("}},
                {"name": "books", "condition": {"pathRegex": "/books"}, "isRetryable": True},
            ]
        },
    }
    harness.sources["serviceprofiles"].apply(sp)
    second = await read(call)
    assert [r.metrics_labels["route"] for r in second.routes] == ["books"]
    metrics = harness.app.registry.render().decode()
    assert 'gossamer_destination_invalid_resources_total{kind="ServiceProfile"} 1' in metrics
    call.cancel()


async def test_get_profile_for_pod_ip_and_unknown_ip_and_cluster_ip(harness: Harness) -> None:
    pod_call = harness.dst.GetProfile(destination_pb2.GetDestination(path="10.1.0.1:8080"))
    pod_profile = await read(pod_call)
    assert not pod_profile.fully_qualified_name
    assert pod_profile.endpoint.metric_labels["namespace"] == "ns"
    assert pod_profile.endpoint.tls_identity.dns_like_identity.name.startswith("web.ns.")
    unknown = await read(
        harness.dst.GetProfile(destination_pb2.GetDestination(path="10.9.9.9:3306"))
    )
    assert unknown.opaque_protocol
    assert not unknown.endpoint.HasField("tls_identity")
    svc = await read(harness.dst.GetProfile(destination_pb2.GetDestination(path="10.96.0.10:80")))
    assert svc.fully_qualified_name == "web.ns.svc.cluster.local"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await read(
            harness.dst.GetProfile(
                destination_pb2.GetDestination(path="nope.ns.svc.cluster.local:80")
            )
        )
    assert err.value.code() == grpc.StatusCode.UNKNOWN
    pod_call.cancel()


async def test_inbound_policy_stream_follows_servers(harness: Harness) -> None:
    spec = inbound_pb2.PortSpec(workload='{"ns":"ns","pod":"web-1"}', port=8080)
    call = harness.inbound.WatchPort(spec)
    first = await read(call)
    assert first.labels["kind"] == "default"
    harness.sources["servers"].apply(
        {
            "kind": "Server",
            "metadata": {"name": "web-http", "namespace": "ns"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "port": 8080},
        }
    )
    second = await read(call)
    assert second.labels["name"] == "web-http"
    assert not second.authorizations
    unary = await harness.inbound.GetPort(spec, timeout=TIMEOUT)
    assert unary == second
    for bad, code in (
        (inbound_pb2.PortSpec(workload="nonsense", port=80), grpc.StatusCode.INVALID_ARGUMENT),
        (inbound_pb2.PortSpec(workload="ns:ghost", port=80), grpc.StatusCode.NOT_FOUND),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await read(harness.inbound.WatchPort(bad))
        assert err.value.code() == code
    call.cancel()


async def test_outbound_policy(harness: Harness) -> None:
    by_ip = outbound_pb2.TrafficSpec(
        source_workload='{"ns":"ns","pod":"web-1"}',
        addr=net_pb2.TcpAddress(ip=ip_address("10.96.0.10"), port=80),
    )
    policy = await read(harness.outbound.Watch(by_ip))
    assert policy.metadata.resource.name == "web"
    by_name = outbound_pb2.TrafficSpec(authority="web.ns.svc.cluster.local:80")
    assert (await harness.outbound.Get(by_name, timeout=TIMEOUT)).metadata.resource.name == "web"
    egress = outbound_pb2.TrafficSpec(addr=net_pb2.TcpAddress(ip=ip_address("8.8.8.8"), port=443))
    assert (await read(harness.outbound.Watch(egress))).metadata.default == "egress-fallback"
    pod_ip = outbound_pb2.TrafficSpec(addr=net_pb2.TcpAddress(ip=ip_address("10.1.0.1"), port=8080))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await read(harness.outbound.Watch(pod_ip))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_admin_readiness_and_metrics(harness: Harness) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.app.admin.port)
    writer.write(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    body = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    assert body.startswith(b"HTTP/1.1 200")
    assert body.endswith(b"ready\n")
    assert b"gossamer_informer_objects" in harness.app.registry.render()


async def test_policy_listener_serves_the_same_apis(harness: Harness) -> None:
    """Proxies reach the policy APIs at LINKERD2_PROXY_POLICY_SVC_ADDR (port 8090 by default)."""
    assert harness.app.policy_port not in (0, harness.app.grpc_port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{harness.app.policy_port}") as channel:
        stub = destination_pb2_grpc.DestinationStub(channel)
        call = stub.Get(destination_pb2.GetDestination(path="web.ns.svc.cluster.local:80"))
        first = await read(call)
        assert first.WhichOneof("update") == "add"
        call.cancel()
