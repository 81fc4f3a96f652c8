"""HTTP/2 flood defences of the balanced outbound path (every stream routed and picked).

A real proxy with discovery from a fake control plane, a raw ``h2`` backend that counts
streams and connections, and raw ``h2`` clients that reset streams as an attacker would.
The assertions count streams, connections, connect attempts and waiting tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import h2.errors
import pytest
from fake_control_plane import ControlPlane, serve_control_plane
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import destination_pb2
from gossamer_proxy.app import Proxy
from gossamer_proxy.http2.balanced import BalancedH2Server
from raw_h2 import REQUEST, CountingH2Backend, RawH2Client, outbound_context, until

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]

pytestmark = pytest.mark.timeout(90)

CLUSTER_IP = ("127.0.0.77", 80)
SVC = "web.emojivoto.svc.cluster.local"
AUTHORITY = f"{SVC}:80"


@pytest.fixture
async def control() -> AsyncIterator[ControlPlane]:
    async with serve_control_plane(policies=False) as running:
        yield running


async def _balanced_proxy(start_proxy: StartProxy, control: ControlPlane, port: int) -> Proxy:
    control.plane.send(
        f"profile:{CLUSTER_IP[0]}:{CLUSTER_IP[1]}",
        destination_pb2.DestinationProfile(fully_qualified_name=SVC),
    )
    control.plane.send(
        f"get:{AUTHORITY}",
        destination_pb2.Update(
            add=destination_pb2.WeightedAddrSet(
                addrs=[
                    destination_pb2.WeightedAddr(
                        addr=tcp_address_to_proto("127.0.0.1", port), weight=10000
                    )
                ]
            )
        ),
    )
    return await start_proxy(
        CLUSTER_IP,
        LINKERD2_PROXY_DESTINATION_SVC_ADDR=f"127.0.0.1:{control.port}",
        LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS="127.0.0.0/8",
        LINKERD2_PROXY_IDENTITY_DISABLED="true",
    )


async def _balanced_server_of(proxy: Proxy) -> BalancedH2Server:
    ctx = outbound_context(proxy)
    await until(lambda: any(isinstance(c, BalancedH2Server) for c in ctx.connections), "server")
    return next(c for c in ctx.connections if isinstance(c, BalancedH2Server))


async def _one_request(client: RawH2Client) -> int:
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, REQUEST, end_stream=True)
    await client.send(client.conn.data_to_send())
    await until(lambda: sid in client.responses, "a response")
    return client.responses[sid]


async def test_rapid_reset_on_balanced_streams_gets_goaway_and_no_upstream_work(
    start_proxy: StartProxy, control: ControlPlane, tcp_server: TcpServer
) -> None:
    backend = CountingH2Backend()
    _, port = await tcp_server(backend.handle)
    proxy = await _balanced_proxy(start_proxy, control, port)
    client = await RawH2Client.connect(proxy.outbound_addr.port)
    try:
        assert await _one_request(client) == 200  # discovery and the connection are warm
        for _ in range(40):  # up to 20,000 HEADERS + RST_STREAM pairs, 500 per write
            for _ in range(500):
                sid = client.conn.get_next_available_stream_id()
                client.conn.send_headers(sid, REQUEST, end_stream=True)
                client.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            if not await client.send(client.conn.data_to_send()) or client.goaway:
                break
        await until(lambda: client.closed, "the proxy to close the connection")
    finally:
        client.close()
    assert client.goaway is not None
    assert client.goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert backend.streams <= 10, backend.streams
    assert backend.connections == 1


async def test_reset_streams_stop_waiting_for_the_one_connect(
    start_proxy: StartProxy,
    control: ControlPlane,
    tcp_server: TcpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = CountingH2Backend()
    _, port = await tcp_server(backend.handle)
    proxy = await _balanced_proxy(start_proxy, control, port)
    ctx = outbound_context(proxy)
    original = ctx.connector.open
    attempts = 0
    release = asyncio.Event()

    async def gated_open(*args: Any, **kwargs: Any) -> Any:
        nonlocal attempts
        attempts += 1
        await release.wait()  # the connect is still under way while streams come and go
        return await original(*args, **kwargs)

    monkeypatch.setattr(ctx.connector, "open", gated_open)
    client = await RawH2Client.connect(proxy.outbound_addr.port)
    server = await _balanced_server_of(proxy)
    try:
        for _ in range(10):  # 10 rounds: 10 streams wait for the connect, then are reset
            sids = []
            for _ in range(10):
                sid = client.conn.get_next_available_stream_id()
                client.conn.send_headers(sid, REQUEST, end_stream=True)
                sids.append(sid)
            await client.send(client.conn.data_to_send())
            await until(
                lambda: attempts == 1 and len(server.pairs) == 10 and len(ctx.tasks) >= 10,
                "the streams to wait for the connect",
            )
            for sid in sids:
                client.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            await client.send(client.conn.data_to_send())
            await until(lambda: not server.pairs, "the resets")
        # What is left is the connect itself: the reset streams stopped waiting for it.
        await until(lambda: len(ctx.tasks) == 1, "the reset streams' waits to end")
        release.set()
        assert await _one_request(client) == 200
    finally:
        client.close()
    assert attempts == 1
    assert backend.connections == 1
    assert backend.streams == 1
    assert client.goaway is None
