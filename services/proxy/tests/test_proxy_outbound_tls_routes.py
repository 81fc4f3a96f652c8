"""TLSRoute and TCPRoute policies in the outbound data path, end to end on loopback.

The original destination is outside the proxy's profile networks, so only its policy (from a
fake control plane) decides. Under a ``tls`` policy the proxy reads the client's ClientHello
(a real one, from Python's TLS stack) and sends the connection, untouched, to the backend of
the route whose hostnames match its SNI; an unmatched SNI, or no TLS at all, is refused and
counted in ``outbound_tls_route_close_total``. An ``opaque`` policy from a TCPRoute sends
connections to its backends by weight, without waiting for protocol detection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from fake_control_plane import ControlPlane, serve_control_plane
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import destination_pb2, outbound_pb2, tls_route_pb2
from gossamer_proxy.app import Proxy
from test_proxy_outbound_egress import metric

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]


@pytest.fixture
async def control() -> AsyncIterator[ControlPlane]:
    async with serve_control_plane() as running:
        yield running


def client_hello(server_name: str | None) -> bytes:
    """The first flight of a real TLS client for ``server_name``."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def named_server(tcp_server: TcpServer, name: bytes) -> tuple[int, list[bytes]]:
    """A backend that answers its name and records the first bytes it got."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            seen.append(await reader.read(65536))
            writer.write(name)
            await writer.drain()
        finally:
            writer.close()

    _, port = await tcp_server(handle)
    return port, seen


def _forward(port: int, name: str) -> outbound_pb2.Backend:
    backend = outbound_pb2.Backend(queue=outbound_pb2.Queue(capacity=100))
    backend.metadata.resource.name = name
    backend.forward.CopyFrom(
        destination_pb2.WeightedAddr(addr=tcp_address_to_proto("127.0.0.1", port), weight=1)
    )
    return backend


def _suffix(*reverse_labels: str) -> tls_route_pb2.SniMatch:
    return tls_route_pb2.SniMatch(
        suffix=tls_route_pb2.SniMatch.Suffix(reverse_labels=list(reverse_labels))
    )


def tls_policy(target: int, a: int, b: int) -> outbound_pb2.OutboundPolicy:
    policy = outbound_pb2.OutboundPolicy()
    resource = policy.metadata.resource
    resource.group, resource.kind, resource.name, resource.port = "core", "Service", "tls", target
    for name, snis, port in (
        ("route-a", [tls_route_pb2.SniMatch(exact="a.example.test")], a),
        ("route-b", [_suffix("test", "example")], b),
    ):
        route = policy.protocol.tls.routes.add()
        route.metadata.resource.kind, route.metadata.resource.name = "TLSRoute", name
        route.snis.extend(snis)
        wrb = route.rules.add().backends.random_available.backends.add(weight=1)
        wrb.backend.backend.CopyFrom(_forward(port, f"backend-{name}"))
    return policy


async def start(start_proxy: StartProxy, control: ControlPlane, target: int) -> Proxy:
    return await start_proxy(
        ("127.0.0.1", target),
        LINKERD2_PROXY_DESTINATION_SVC_ADDR=control.addr,
        LINKERD2_PROXY_POLICY_SVC_ADDR=control.addr,
        LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS="10.0.0.0/8",
        LINKERD2_PROXY_IDENTITY_DISABLED="true",
    )


async def exchange(proxy: Proxy, first: bytes) -> bytes:
    addr = proxy.outbound_addr
    reader, writer = await asyncio.open_connection(addr.host, addr.port)
    try:
        writer.write(first)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(), 15)
        except ConnectionResetError:
            return b""
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def test_tls_connections_are_routed_by_sni(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    target, target_seen = await named_server(tcp_server, b"original")
    a, a_seen = await named_server(tcp_server, b"backend-a")
    b, b_seen = await named_server(tcp_server, b"backend-b")
    control.plane.send(f"policy:127.0.0.1:{target}", tls_policy(target, a, b))
    proxy = await start(start_proxy, control, target)

    hello_a = client_hello("a.example.test")
    assert await exchange(proxy, hello_a) == b"backend-a"
    assert a_seen == [hello_a]  # passed through untouched
    assert await exchange(proxy, client_hello("x.y.example.test")) == b"backend-b"
    # No route for these: refused, nothing reaches any server.
    assert await exchange(proxy, client_hello("example.test")) == b""
    assert await exchange(proxy, client_hello(None)) == b""
    assert await exchange(proxy, b"GET / HTTP/1.1\r\nhost: a.example.test\r\n\r\n") == b""
    assert (len(a_seen), len(b_seen), target_seen) == (1, 1, [])

    parent = {"parent_kind": "Service", "parent_name": "tls"}
    assert metric(proxy, "outbound_tls_route_open_total", route_name="route-a", **parent) == 1
    assert metric(proxy, "outbound_tls_route_open_total", route_name="route-b", **parent) == 1
    assert metric(proxy, "outbound_tls_route_close_total", error="no_route", **parent) == 2
    assert metric(proxy, "outbound_tls_route_close_total", error="not_tls", **parent) == 1


async def test_tcp_route_splits_connections_by_weight(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    target, target_seen = await named_server(tcp_server, b"original")
    a, _ = await named_server(tcp_server, b"backend-a")
    b, _ = await named_server(tcp_server, b"backend-b")
    policy = outbound_pb2.OutboundPolicy()
    policy.metadata.resource.kind, policy.metadata.resource.name = "Service", "tcp"
    route = policy.protocol.opaque.routes.add()
    route.metadata.resource.kind, route.metadata.resource.name = "TCPRoute", "split"
    # Two rules: their backends share one weighted choice (a gets none: weight 0).
    for port, weight in ((a, 0), (b, 1)):
        wrb = route.rules.add().backends.random_available.backends.add(weight=weight)
        wrb.backend.backend.CopyFrom(_forward(port, f"backend-{port}"))
    control.plane.send(f"policy:127.0.0.1:{target}", policy)
    proxy = await start(start_proxy, control, target)

    for _ in range(3):
        assert await exchange(proxy, b"\x00opaque") == b"backend-b"
    assert target_seen == []
    labels = {"parent_name": "tcp", "route_kind": "TCPRoute", "route_name": "split"}
    assert metric(proxy, "outbound_tcp_route_open_total", **labels) == 3
