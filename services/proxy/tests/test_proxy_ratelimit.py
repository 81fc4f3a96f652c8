"""An HTTPLocalRateLimitPolicy served by the inbound policy API is enforced on loopback.

A real inbound proxy watches its port's policy on the fake control plane, which answers a
``Server`` carrying an ``HttpLocalRateLimit`` of one request per second in total. Requests
arrive over HTTP/1.1 and HTTP/2 (prior knowledge); the second within the second gets
Linkerd's 429 with ``l5d-proxy-error`` and is counted in ``inbound_http_local_ratelimit_total``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from fake_control_plane import ControlPlane, serve_control_plane
from gossamer_api.proxy import inbound_pb2, meta_pb2, net_pb2
from gossamer_proxy.app import Proxy

StartProxy = Callable[..., Awaitable[Proxy]]
Backend = Callable[..., Awaitable[tuple[str, int]]]
Response = tuple[int, dict[str, str], bytes]


@pytest.fixture
async def plane() -> AsyncIterator[ControlPlane]:
    async with serve_control_plane() as cp:
        yield cp


async def _backend(tcp_server: Backend) -> tuple[str, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await tcp_server(handle)


def _server(rps: int) -> inbound_pb2.Server:
    server = inbound_pb2.Server()
    server.labels.update({"group": "policy.linkerd.io", "kind": "server", "name": "web-http"})
    authz = server.authorizations.add()
    for ipv4 in (True, False):
        network = authz.networks.add()
        if ipv4:
            network.net.ip.ipv4 = 0
        else:
            network.net.ip.ipv6.CopyFrom(net_pb2.IPv6())
        network.net.prefix_len = 0
    authz.authentication.unauthenticated.SetInParent()
    authz.labels.update({"group": "", "kind": "default", "name": "all-unauthenticated"})
    limit = server.protocol.detect.http_local_rate_limit
    server.protocol.detect.timeout.seconds = 10
    limit.metadata.CopyFrom(
        meta_pb2.Metadata(
            resource=meta_pb2.Resource(
                group="policy.linkerd.io", kind="HTTPLocalRateLimitPolicy", name="web-rl"
            )
        )
    )
    limit.total.requestsPerSecond = rps
    return server


async def _read_response(reader: asyncio.StreamReader) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split(" ")[1]), headers, body


async def _get(addr: tuple[str, int]) -> Response:
    reader, writer = await asyncio.open_connection(*addr)
    try:
        writer.write(b"GET / HTTP/1.1\r\nhost: web:80\r\n\r\n")
        return await asyncio.wait_for(_read_response(reader), 10)
    finally:
        writer.close()


async def _h2_get(addr: tuple[str, int]) -> dict[bytes, bytes]:
    reader, writer = await asyncio.open_connection(*addr)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    conn.send_headers(
        1,
        [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"web"), (b":path", b"/")],
        end_stream=True,
    )
    writer.write(conn.data_to_send())
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), 10)
            assert data
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    return dict(event.headers)
            writer.write(conn.data_to_send())
    finally:
        writer.close()


def _metric(proxy: Proxy, name: str, **labels: str) -> float:
    total = 0.0
    for line in proxy.metrics.registry.render().decode().splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_local_rate_limit_answers_429_and_counts(
    start_proxy: StartProxy, tcp_server: Backend, plane: ControlPlane
) -> None:
    backend = await _backend(tcp_server)
    port = backend[1]
    plane.plane.send(f"inbound:{port}", _server(rps=1))
    inbound = await start_proxy(
        GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"{backend[0]}:{port}",
        LINKERD2_PROXY_POLICY_SVC_ADDR=plane.addr,
        LINKERD2_PROXY_POLICY_WORKLOAD='{"ns":"ns","pod":"web-0"}',
        LINKERD2_PROXY_INBOUND_PORTS=str(port),
    )
    for _ in range(500):  # the watch answers within a few event-loop turns
        if inbound.policies.policy(port).meta.name == "web-http":
            break
        await asyncio.sleep(0.01)
    assert inbound.policies.policy(port).rate_limit is not None
    addr = (inbound.inbound_addr.host, inbound.inbound_addr.port)

    status, _, body = await _get(addr)
    assert (status, body) == (200, b"ok")
    status, headers, _ = await _get(addr)
    assert status == 429
    assert headers["l5d-proxy-error"] == "rate limited: total rate limit exceeded: 1rps"
    h2_headers = await _h2_get(addr)
    assert h2_headers[b":status"] == b"429"
    assert b"total rate limit exceeded" in h2_headers[b"l5d-proxy-error"]
    assert (
        _metric(
            inbound,
            "inbound_http_local_ratelimit_total",
            srv_name="web-http",
            ratelimit_kind="HTTPLocalRateLimitPolicy",
            ratelimit_name="web-rl",
            ratelimit_scope="total",
            target_addr=f"{backend[0]}:{port}",
        )
        == 2
    )
    assert _metric(inbound, "response_total", status_code="429") == 2


async def test_policy_changes_apply_to_open_connections(
    start_proxy: StartProxy, tcp_server: Backend, plane: ControlPlane
) -> None:
    """A rate limit (or a revoked authorization) reaches requests on a kept-alive connection."""
    backend = await _backend(tcp_server)
    port = backend[1]
    key = f"inbound:{port}"
    open_server = _server(rps=1)
    open_server.protocol.detect.ClearField("http_local_rate_limit")
    plane.plane.send(key, open_server)
    inbound = await start_proxy(
        GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"{backend[0]}:{port}",
        LINKERD2_PROXY_POLICY_SVC_ADDR=plane.addr,
        LINKERD2_PROXY_POLICY_WORKLOAD='{"ns":"ns","pod":"web-0"}',
        LINKERD2_PROXY_INBOUND_PORTS=str(port),
    )

    async def policy_is(check: Callable[[Any], bool]) -> None:
        for _ in range(500):  # the watch answers within a few event-loop turns
            if check(inbound.policies.policy(port)):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the policy update did not arrive")

    await policy_is(lambda p: p.meta.name == "web-http")
    reader, writer = await asyncio.open_connection(
        inbound.inbound_addr.host, inbound.inbound_addr.port
    )
    request = b"GET / HTTP/1.1\r\nhost: web:80\r\n\r\n"
    try:
        for _ in range(3):
            writer.write(request)
            assert (await asyncio.wait_for(_read_response(reader), 10))[0] == 200
        plane.plane.send(key, _server(rps=1))
        await policy_is(lambda p: p.rate_limit is not None)
        statuses = []
        for _ in range(2):
            writer.write(request)
            statuses.append((await asyncio.wait_for(_read_response(reader), 10))[0])
        assert statuses == [200, 429]
        denied = _server(rps=1)
        denied.ClearField("authorizations")
        plane.plane.send(key, denied)
        await policy_is(lambda p: not p.authorizations)
        writer.write(request)
        assert (await asyncio.wait_for(_read_response(reader), 10))[0] == 403
    finally:
        writer.close()
