"""EgressNetwork policies in the outbound data path, end to end on loopback.

The original destination (the outbound listener's fixed target) is a loopback server outside
the proxy's profile networks, so the proxy treats it as traffic leaving the cluster: no
profile, but the policy it watches for the address. A fake control plane serves the
EgressNetwork policy Gossamer's destination builds (linkerd-wire.md §3.3): ``Deny`` answers
HTTP with 403 and ``l5d-proxy-error`` (counted in ``response_total``) and refuses opaque TCP
(counted in ``outbound_tcp_route_close_total``); ``Allow`` forwards both to the destination.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from fake_control_plane import ControlPlane, serve_control_plane
from google.protobuf.duration_pb2 import Duration
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import (
    destination_pb2,
    http_route_pb2,
    meta_pb2,
    opaque_route_pb2,
    outbound_pb2,
)
from gossamer_proxy.app import Proxy

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]
WORKLOAD = '{"ns":"app","pod":"client-0"}'


@pytest.fixture
async def control() -> AsyncIterator[ControlPlane]:
    async with serve_control_plane() as running:
        yield running


def _seconds(value: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(round(value * 1e9))
    return d


def egress_policy(port: int, *, allow: bool) -> outbound_pb2.OutboundPolicy:
    verdict = "allow" if allow else "deny"
    resource = {"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": "world",
                "namespace": "app", "port": port}  # fmt: skip
    backend = outbound_pb2.Backend(queue=outbound_pb2.Queue(capacity=100))
    backend.metadata.resource.CopyFrom(meta_pb2.Resource(**resource))  # type: ignore[arg-type]
    backend.forward.CopyFrom(
        destination_pb2.WeightedAddr(addr=tcp_address_to_proto("127.0.0.1", port), weight=1)
    )
    policy = outbound_pb2.OutboundPolicy()
    policy.metadata.resource.MergeFrom(backend.metadata.resource)
    detect = policy.protocol.detect
    detect.timeout.CopyFrom(_seconds(10))
    opaque = detect.opaque.routes.add()
    opaque.metadata.default = f"tcp-egress-{verdict}"
    tcp_rule = opaque.rules.add()
    tcp_rule.backends.first_available.backends.add().backend.CopyFrom(backend)
    if not allow:
        tcp_rule.filters.add().forbidden.CopyFrom(opaque_route_pb2.Forbidden())
    for http in (detect.http1, detect.http2):
        route = http.routes.add()
        route.metadata.default = f"http-egress-{verdict}"
        rule = route.rules.add()
        rule.matches.add().path.prefix = "/"
        if not allow:
            rule.filters.add().failure_injector.CopyFrom(
                http_route_pb2.HttpFailureInjector(status=403, message="traffic not allowed")
            )
        rule.backends.first_available.backends.add().backend.CopyFrom(backend)
    return policy


async def external(tcp_server: TcpServer) -> tuple[int, list[bytes]]:
    """The world outside: HTTP/1.1 ``ok`` to requests, and an echo for any other protocol."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.read(4096)
            seen.append(first)
            if first.startswith(b"GET "):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            else:
                writer.write(b"echo:" + first)
            await writer.drain()
        finally:
            writer.close()

    _, port = await tcp_server(handle)
    return port, seen


async def egress_proxy(start_proxy: StartProxy, control: ControlPlane, port: int) -> Proxy:
    return await start_proxy(
        ("127.0.0.1", port),
        LINKERD2_PROXY_DESTINATION_SVC_ADDR=control.addr,
        LINKERD2_PROXY_POLICY_SVC_ADDR=control.addr,
        LINKERD2_PROXY_POLICY_WORKLOAD=WORKLOAD,
        # Loopback is not a cluster network: the target is outside the cluster.
        LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS="10.0.0.0/8",
        LINKERD2_PROXY_IDENTITY_DISABLED="true",
    )


async def http_get(proxy: Proxy) -> tuple[int, dict[str, str], bytes]:
    addr = proxy.outbound_addr
    reader, writer = await asyncio.open_connection(addr.host, addr.port)
    try:
        writer.write(b"GET /anything HTTP/1.1\r\nhost: api.example.com\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
        lines = head.decode("latin-1").split("\r\n")
        fields = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(fields.get("content-length", "0")))
        return int(lines[0].split(" ")[1]), fields, body
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def tcp_exchange(proxy: Proxy) -> bytes:
    """Send a non-HTTP greeting and read until the proxy or the server closes."""
    addr = proxy.outbound_addr
    reader, writer = await asyncio.open_connection(addr.host, addr.port)
    try:
        writer.write(b"\x00\x01hello opaque\n" * 4)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(), 15)
        except ConnectionResetError:
            return b""
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def metric(proxy: Proxy, name: str, **labels: str) -> float:
    total = 0.0
    for line in proxy.metrics.registry.render().decode().splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_deny_answers_403_and_refuses_tcp(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    port, seen = await external(tcp_server)
    control.plane.send(f"policy:127.0.0.1:{port}", egress_policy(port, allow=False))
    proxy = await egress_proxy(start_proxy, control, port)

    status, fields, _ = await http_get(proxy)
    assert status == 403
    assert fields["l5d-proxy-error"] == "traffic not allowed"

    assert await tcp_exchange(proxy) == b""
    assert seen == []  # nothing reached the outside world
    # The proxy asked about the original destination, as the pod's workload.
    spec = control.plane.specs[0]
    assert (spec.source_workload, spec.addr.port) == (WORKLOAD, port)
    labels = {
        "parent_kind": "EgressNetwork",
        "parent_name": "world",
        "route_name": "tcp-egress-deny",
    }
    assert metric(proxy, "outbound_tcp_route_close_total", error="forbidden", **labels) == 1
    assert metric(proxy, "outbound_tcp_route_open_total", **labels) == 1
    # The synthesized 403 is an outbound response like any other.
    assert metric(proxy, "response_total", direction="outbound", status_code="403") == 1


async def test_allow_forwards_http_and_tcp(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    port, seen = await external(tcp_server)
    control.plane.send(f"policy:127.0.0.1:{port}", egress_policy(port, allow=True))
    proxy = await egress_proxy(start_proxy, control, port)

    status, _, body = await http_get(proxy)
    assert (status, body) == (200, b"ok")
    assert (await tcp_exchange(proxy)).startswith(b"echo:\x00\x01hello opaque")
    assert len(seen) == 2
    labels = {"parent_kind": "EgressNetwork", "route_name": "tcp-egress-allow"}
    assert metric(proxy, "outbound_tcp_route_open_total", **labels) == 1
    assert metric(proxy, "outbound_tcp_route_close_total") == 0
