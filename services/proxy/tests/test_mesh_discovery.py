"""Destination and policy watches against real in-process gRPC servers on 127.0.0.1.

The servers are grpcio (like the real control plane); the clients under test are the
proxy's own, on grpclib, over a channel from :func:`control_channel`.

The servicers are peers the tests drive: each stream reads the messages to send from a
queue per target, so a test decides exactly what the control plane says and when.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from gossamer_api.addresses import ip_network_to_proto, tcp_address_from_proto, tcp_address_to_proto
from gossamer_api.proxy import (
    destination_pb2,
    destination_pb2_grpc,
    inbound_pb2,
    inbound_pb2_grpc,
    outbound_pb2,
    outbound_pb2_grpc,
)
from gossamer_proxy.mesh.authz import ClientInfo, authorize_tcp, default_policy
from gossamer_proxy.mesh.backoff import Backoff
from gossamer_proxy.mesh.channels import control_channel
from gossamer_proxy.mesh.control_stream import StreamConfig
from gossamer_proxy.mesh.discovery import DestinationClient, service_authority
from gossamer_proxy.mesh.policy_watch import InboundPolicyClient, OutboundPolicyClient
from gossamer_proxy.mesh.watch_state import WatchState
from grpclib.client import Channel

FAST = StreamConfig(
    initial_timeout=5.0, idle_timeout=30.0, lifetime=60.0, backoff=Backoff(0.02, 0.1, 0.5)
)
CONTEXT = '{"ns":"emojivoto","nodeName":"node-1","pod":"web-0"}'
SVC = "web.emojivoto.svc.cluster.local"

Final = tuple[grpc.StatusCode, str]


@dataclass
class Script:
    """Per-target message queues; an item is a message, or a (code, details) to abort with."""

    queues: dict[str, asyncio.Queue[Any]] = field(
        default_factory=lambda: defaultdict(asyncio.Queue)
    )
    requests: list[Any] = field(default_factory=list)
    open_streams: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def send(self, target: str, *messages: Any) -> None:
        for message in messages:
            self.queues[target].put_nowait(message)

    async def stream(
        self, target: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        self.open_streams[target] += 1
        try:
            while True:
                item = await self.queues[target].get()
                if isinstance(item, tuple):
                    await context.abort(item[0], item[1])
                yield item
        finally:
            self.open_streams[target] -= 1


class FakeDestination(destination_pb2_grpc.DestinationServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def Get(
        self, request: destination_pb2.GetDestination, context: Any
    ) -> AsyncIterator[Any]:
        self.script.requests.append(("get", request))
        async for item in self.script.stream("get:" + request.path, context):
            yield item

    async def GetProfile(
        self, request: destination_pb2.GetDestination, context: Any
    ) -> AsyncIterator[Any]:
        self.script.requests.append(("profile", request))
        async for item in self.script.stream("profile:" + request.path, context):
            yield item


class FakeInbound(inbound_pb2_grpc.InboundServerPoliciesServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def GetPort(self, request: inbound_pb2.PortSpec, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the proxy uses WatchPort")

    async def WatchPort(self, request: inbound_pb2.PortSpec, context: Any) -> AsyncIterator[Any]:
        self.script.requests.append(("inbound", request))
        async for item in self.script.stream(f"inbound:{request.port}", context):
            yield item


class FakeOutbound(outbound_pb2_grpc.OutboundPoliciesServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def Get(self, request: outbound_pb2.TrafficSpec, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the proxy uses Watch")

    async def Watch(self, request: outbound_pb2.TrafficSpec, context: Any) -> AsyncIterator[Any]:
        self.script.requests.append(("outbound", request))
        ip, port = tcp_address_from_proto(request.addr)
        async for item in self.script.stream(f"outbound:{ip}:{port}", context):
            yield item


@dataclass
class ControlPlane:
    script: Script
    server: grpc.aio.Server
    port: int

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.server.stop(None)

    async def restart(self) -> None:
        self.server = await _serve(self.script, self.port)[0]


def _serve(script: Script, port: int = 0) -> tuple[Any, int]:
    server = grpc.aio.server()
    destination_pb2_grpc.add_DestinationServicer_to_server(FakeDestination(script), server)
    inbound_pb2_grpc.add_InboundServerPoliciesServicer_to_server(FakeInbound(script), server)
    outbound_pb2_grpc.add_OutboundPoliciesServicer_to_server(FakeOutbound(script), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")

    async def start() -> grpc.aio.Server:
        await server.start()
        return server

    return start(), bound


@pytest.fixture
async def control_plane() -> AsyncIterator[ControlPlane]:
    script = Script()
    starting, port = _serve(script)
    plane = ControlPlane(script, await starting, port)
    yield plane
    await plane.server.stop(None)


@pytest.fixture
async def channel(control_plane: ControlPlane) -> AsyncIterator[Channel]:
    chan = control_channel(control_plane.addr, server_name=None, trust_anchors_pem=None)
    yield chan
    chan.close()


def add(*ips: str, port: int = 8080) -> destination_pb2.Update:
    return destination_pb2.Update(
        add=destination_pb2.WeightedAddrSet(
            addrs=[
                destination_pb2.WeightedAddr(addr=tcp_address_to_proto(ip, port), weight=10000)
                for ip in ips
            ],
            metric_labels={"service": "web", "namespace": "emojivoto"},
        )
    )


def remove(*ips: str, port: int = 8080) -> destination_pb2.Update:
    return destination_pb2.Update(
        remove=destination_pb2.AddrSet(addrs=[tcp_address_to_proto(ip, port) for ip in ips])
    )


def ips(state: WatchState[Any]) -> list[str]:
    return sorted(str(ip) for ip, _ in state.value.endpoints)


async def wait_until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``predicate`` (bounded in count and time) until it holds."""
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


async def test_get_applies_updates_and_sends_the_context_token(
    control_plane: ControlPlane, channel: Channel
) -> None:
    client = DestinationClient(channel, context_token=CONTEXT, stream_config=FAST)
    try:
        control_plane.script.send(f"get:{SVC}:8080", add("10.1.0.1", "10.1.0.2"))
        async with client.endpoints(f"{SVC}:8080") as state:
            await wait_until(lambda: len(state.value.endpoints) == 2)
            version = state.version
            control_plane.script.send(f"get:{SVC}:8080", remove("10.1.0.1"), add("10.1.0.3"))
            assert await asyncio.wait_for(state.wait_changed(version), 10) > version
            await wait_until(lambda: ips(state) == ["10.1.0.2", "10.1.0.3"])
        kind, request = control_plane.script.requests[0]
        assert (kind, request.path, request.context_token) == ("get", f"{SVC}:8080", CONTEXT)
    finally:
        await client.close()


async def test_reconnect_keeps_last_state_then_resyncs(
    control_plane: ControlPlane, channel: Channel
) -> None:
    client = DestinationClient(channel, stream_config=FAST)
    target = f"get:{SVC}:8080"
    try:
        control_plane.script.send(target, add("10.1.0.1", "10.1.0.2"))
        state = client.acquire_endpoints(f"{SVC}:8080")
        await wait_until(lambda: len(state.value.endpoints) == 2)
        await control_plane.stop()
        await asyncio.sleep(0.3)  # several reconnect attempts fail meanwhile
        assert ips(state) == ["10.1.0.1", "10.1.0.2"]  # last known state still served
        # The control plane comes back with a different endpoint set.
        control_plane.script.queues.clear()
        control_plane.script.send(target, add("10.1.0.2", "10.1.0.9"))
        await control_plane.restart()
        await wait_until(lambda: ips(state) == ["10.1.0.2", "10.1.0.9"])
        client.release_endpoints(f"{SVC}:8080")
    finally:
        await client.close()


async def test_server_error_reconnects_with_backoff(
    control_plane: ControlPlane, channel: Channel
) -> None:
    client = DestinationClient(channel, stream_config=FAST)
    target = f"get:{SVC}:8080"
    try:
        control_plane.script.send(target, add("10.1.0.1"), (grpc.StatusCode.UNAVAILABLE, "busy"))
        control_plane.script.send(target, add("10.1.0.5"))
        async with client.endpoints(f"{SVC}:8080") as state:
            await wait_until(lambda: ips(state) == ["10.1.0.5"])
        assert sum(1 for kind, _ in control_plane.script.requests if kind == "get") == 2
    finally:
        await client.close()


async def test_no_first_message_times_out_and_resubscribes(
    control_plane: ControlPlane, channel: Channel
) -> None:
    config = StreamConfig(initial_timeout=0.1, backoff=Backoff(0.01, 0.02))
    client = DestinationClient(channel, stream_config=config)
    try:
        async with client.endpoints(f"{SVC}:8080") as state:
            await wait_until(
                lambda: sum(1 for k, _ in control_plane.script.requests if k == "get") >= 3
            )
            assert not state.value.known
    finally:
        await client.close()


async def test_cluster_ip_resolves_through_profile_then_get(
    control_plane: ControlPlane, channel: Channel
) -> None:
    client = DestinationClient(channel, stream_config=FAST)
    try:
        control_plane.script.send(
            "profile:10.96.0.20:8080",
            destination_pb2.DestinationProfile(fully_qualified_name=SVC),
        )
        control_plane.script.send(f"get:{SVC}:8080", add("10.1.0.7"))
        async with client.profile("10.96.0.20:8080") as profile_state:
            await wait_until(lambda: profile_state.value is not None)
            authority = service_authority(profile_state.value, 8080)
            assert authority == f"{SVC}:8080"
            async with client.endpoints(authority) as endpoints:
                await wait_until(lambda: ips(endpoints) == ["10.1.0.7"])
    finally:
        await client.close()


async def test_rejected_discovery_is_final_and_bad_profiles_keep_the_last_good(
    control_plane: ControlPlane, channel: Channel
) -> None:
    client = DestinationClient(channel, stream_config=FAST)
    try:
        control_plane.script.send(
            "profile:bad:80", (grpc.StatusCode.INVALID_ARGUMENT, "not a service name")
        )
        async with client.profile("bad:80") as state:
            await wait_until(lambda: state.final is not None)
            assert state.value is None
            assert state.final is not None
            assert "INVALID_ARGUMENT" in state.final
        good = destination_pb2.DestinationProfile(fully_qualified_name=SVC)
        broken = destination_pb2.DestinationProfile(
            fully_qualified_name=SVC,
            routes=[
                destination_pb2.Route(
                    condition=destination_pb2.RequestMatch(
                        path=destination_pb2.PathMatch(regex="([")
                    )
                )
            ],
        )
        control_plane.script.send(f"profile:{SVC}:80", good, broken)
        async with client.profile(f"{SVC}:80") as state:
            await wait_until(lambda: state.last_error is not None)
            assert state.value is not None
            assert state.value.fully_qualified_name == SVC
        assert sum(1 for k, r in control_plane.script.requests if r.path == "bad:80") == 1
    finally:
        await client.close()


async def test_unused_watches_are_evicted_after_the_idle_timeout(
    control_plane: ControlPlane, channel: Channel
) -> None:
    client = DestinationClient(channel, stream_config=FAST, idle_timeout=0.2)
    target = f"get:{SVC}:8080"
    try:
        control_plane.script.send(target, add("10.1.0.1"))
        async with client.endpoints(f"{SVC}:8080") as state:
            await wait_until(lambda: state.value.known)
            async with client.endpoints(f"{SVC}:8080") as shared:
                assert shared is state  # one watch per target
        assert client.watching() == [("get", f"{SVC}:8080")]
        await wait_until(lambda: client.watching() == [])
        await wait_until(lambda: control_plane.script.open_streams[target] == 0)
    finally:
        await client.close()


def server_message(name: str) -> inbound_pb2.Server:
    return inbound_pb2.Server(
        protocol=inbound_pb2.ProxyProtocol(opaque=inbound_pb2.ProxyProtocol.Opaque()),
        authorizations=[
            inbound_pb2.Authz(
                networks=[inbound_pb2.Network(net=ip_network_to_proto("10.0.0.0/8"))],
                authentication=inbound_pb2.Authn(
                    unauthenticated=inbound_pb2.Authn.PermitUnauthenticated()
                ),
            )
        ],
        labels={"group": "policy.linkerd.io", "kind": "server", "name": name},
    )


async def test_inbound_policy_starts_from_default_and_survives_outages(
    control_plane: ControlPlane, channel: Channel
) -> None:
    client = InboundPolicyClient(
        channel,
        workload='{"ns":"emojivoto","pod":"web-0"}',
        default=lambda port: default_policy("deny"),
        pinned_ports=[8080],
        stream_config=FAST,
    )
    outsider = ClientInfo(ipaddress.ip_address("10.2.3.4"))
    try:
        client.start()
        assert client.policy(8080).meta.name == "deny"
        assert not authorize_tcp(client.policy(8080), outsider).allowed
        control_plane.script.send("inbound:8080", server_message("web-tcp"))
        state = client.state(8080)
        await wait_until(lambda: state.value.meta.name == "web-tcp")
        assert authorize_tcp(client.policy(8080), outsider).allowed
        await control_plane.stop()
        await asyncio.sleep(0.2)
        assert client.policy(8080).meta.name == "web-tcp"
        kind, request = control_plane.script.requests[0]
        assert (kind, request.port, request.workload) == (
            "inbound",
            8080,
            '{"ns":"emojivoto","pod":"web-0"}',
        )
    finally:
        await client.close()


async def test_outbound_policy_not_found_means_no_policy(
    control_plane: ControlPlane, channel: Channel
) -> None:
    client = OutboundPolicyClient(channel, workload="{}", stream_config=FAST)
    try:
        control_plane.script.send(
            "outbound:10.1.0.9:8080", (grpc.StatusCode.NOT_FOUND, "no such service")
        )
        policy = outbound_pb2.OutboundPolicy(
            protocol=outbound_pb2.ProxyProtocol(opaque=outbound_pb2.ProxyProtocol.Opaque())
        )
        control_plane.script.send("outbound:10.96.0.1:80", policy)
        missing = client.watch("10.1.0.9", 8080)
        found = client.watch("10.96.0.1", 80)
        await wait_until(lambda: missing.final is not None and found.value is not None)
        assert missing.value is None
        assert found.value is not None
        assert found.value.protocol == "opaque"
    finally:
        await client.close()
