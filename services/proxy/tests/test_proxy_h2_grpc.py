"""HTTP/2 and gRPC through a real proxy on loopback (grpcio client and server, httpx h2)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
import pytest
from gossamer_proxy.app import Proxy

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]
Backend = tuple[str, int, dict[str, Any]]
ReadResponse = Callable[[asyncio.StreamReader], Awaitable[tuple[int, dict[str, str], bytes]]]

pytestmark = pytest.mark.timeout(60)


async def _unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    if request == b"not-found":
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if request == b"unavailable":
        await context.abort(grpc.StatusCode.UNAVAILABLE, "try later")
    await context.send_initial_metadata((("x-initial", "i1"),))
    context.set_trailing_metadata((("x-trailer", "t1"), ("x-bin-bin", b"\x00\x01")))
    return b"echo:" + request


async def _metadata_names(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return ",".join(sorted(k for k, _ in context.invocation_metadata() or ())).encode()


async def _bidi(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    count = 0
    async for message in requests:
        count += 1
        yield b"re:" + message
    context.set_trailing_metadata((("x-count", str(count)),))


async def _server_stream(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    for _ in range(int(request)):
        yield b"s" * 100_000


@pytest.fixture
async def grpc_backend() -> AsyncIterator[tuple[str, int]]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Echo",
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(_unary),
                    "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
                    "Many": grpc.unary_stream_rpc_method_handler(_server_stream),
                    "Meta": grpc.unary_unary_rpc_method_handler(_metadata_names),
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield "127.0.0.1", port
    await server.stop(0)


def _metric(text: str, name: str, *needles: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(n in line for n in needles)
    )


async def test_grpc_unary_trailers_and_status(
    start_proxy: StartProxy, grpc_backend: tuple[str, int]
) -> None:
    proxy = await start_proxy(grpc_backend)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy.outbound_addr.port}") as channel:
        unary = channel.unary_unary("/test.Echo/Unary", None, None)
        call = unary(b"hello")
        assert await call == b"echo:hello"
        assert ("x-initial", "i1") in tuple(await call.initial_metadata())
        trailers = tuple(await call.trailing_metadata())
        assert ("x-trailer", "t1") in trailers
        assert ("x-bin-bin", b"\x00\x01") in trailers
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await unary(b"not-found")
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
        assert info.value.details() == "no such thing"
        big = bytes(range(256)) * 12_000  # 3 MB: many windows' worth
        assert await unary(big) == b"echo:" + big
    async with httpx.AsyncClient() as admin:
        text = (await admin.get(f"http://127.0.0.1:{proxy.admin_port}/metrics")).text
    assert _metric(text, "response_total", 'grpc_status="0"', 'classification="success"') == 2
    assert _metric(text, "response_total", 'grpc_status="5"', 'classification="failure"') == 1


async def test_grpc_bidi_and_server_streaming(
    start_proxy: StartProxy, grpc_backend: tuple[str, int]
) -> None:
    proxy = await start_proxy(grpc_backend)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy.outbound_addr.port}") as channel:
        bidi = channel.stream_stream("/test.Echo/Bidi", None, None)
        call = bidi(None)
        for i in range(50):
            await call.write(b"m%d" % i)
            assert await call.read() == b"re:m%d" % i
        await call.done_writing()
        assert await call.code() is grpc.StatusCode.OK
        assert ("x-count", "50") in tuple(await call.trailing_metadata())
        many = channel.unary_stream("/test.Echo/Many", None, None)
        total = 0
        async for message in many(b"40"):  # 4 MB, so flow control must turn over
            total += len(message)
        assert total == 4_000_000
        # Several concurrent streams on one connection.
        unary = channel.unary_unary("/test.Echo/Unary", None, None)
        results = await asyncio.gather(*(unary(b"c%d" % i) for i in range(30)))
        assert results == [b"echo:c%d" % i for i in range(30)]


async def test_grpc_to_a_dead_upstream_gets_unavailable(start_proxy: StartProxy) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()
    proxy = await start_proxy(dead)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy.outbound_addr.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary("/test.Echo/Unary", None, None)(b"x", timeout=10)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "connection refused" in (info.value.details() or "")


async def test_h2_non_grpc_error_is_http_status(start_proxy: StartProxy) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()
    proxy = await start_proxy(dead)
    async with httpx.AsyncClient(http1=False, http2=True) as client:
        r = await client.get(f"http://127.0.0.1:{proxy.outbound_addr.port}/x")
    assert r.http_version == "HTTP/2"
    assert r.status_code == 502
    assert r.headers["l5d-proxy-error"].startswith("connection refused")


async def test_h2_reset_stream_reaches_the_server_side(
    start_proxy: StartProxy, grpc_backend: tuple[str, int]
) -> None:
    proxy = await start_proxy(grpc_backend)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy.outbound_addr.port}") as channel:
        many = channel.unary_stream("/test.Echo/Many", None, None)
        call = many(b"1000")
        await call.read()
        call.cancel()  # RST_STREAM(CANCEL) from the client
        assert await call.code() is grpc.StatusCode.CANCELLED
        # The connection still works afterwards.
        assert await channel.unary_unary("/test.Echo/Unary", None, None)(b"after") == b"echo:after"


class _GoawayServer:
    """An h2 server that answers stream 1 and then sends GOAWAY(last_stream_id=1)."""

    def __init__(self) -> None:
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first_connection = self.connections == 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        answered = 0
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    if first_connection and answered >= 1:
                        conn.close_connection(last_stream_id=1)
                        continue
                    answered += 1
                    conn.send_headers(event.stream_id, [(":status", "200")])
                    conn.send_data(event.stream_id, b"conn%d" % self.connections, end_stream=True)
            writer.write(conn.data_to_send())
            await writer.drain()
        writer.close()


async def _h2_get(port: int, paths: list[str]) -> dict[int, tuple[str, bytes | int]]:
    """Open streams for ``paths`` on one connection; returns stream id -> outcome."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    ids = []
    for path in paths:
        sid = conn.get_next_available_stream_id()
        ids.append(sid)
        conn.send_headers(
            sid,
            [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "t")],
            end_stream=True,
        )
        writer.write(conn.data_to_send())
        await writer.drain()
        await asyncio.sleep(0.1)  # keep the order deterministic at the server
    outcome: dict[int, tuple[str, bytes | int]] = {}
    bodies: dict[int, bytes] = {sid: b"" for sid in ids}
    async with asyncio.timeout(10):
        while len(outcome) < len(ids):
            data = await reader.read(65536)
            assert data, "proxy closed the connection"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    outcome[event.stream_id] = ("data", bodies[event.stream_id])
                elif isinstance(event, h2.events.StreamReset):
                    outcome[event.stream_id] = ("reset", event.error_code)
            writer.write(conn.data_to_send())
    writer.close()
    return outcome


async def test_upstream_goaway_refuses_unprocessed_streams(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    server = _GoawayServer()
    target = await tcp_server(server.handle)
    proxy = await start_proxy(target)
    outcome = await _h2_get(proxy.outbound_addr.port, ["/a", "/b", "/c"])
    assert outcome[1] == ("data", b"conn1")
    # Stream 3 was not processed upstream: REFUSED_STREAM tells the client it may retry.
    assert outcome[3] == ("reset", h2.errors.ErrorCodes.REFUSED_STREAM)
    # Later streams on the same client connection go to a fresh upstream connection.
    assert outcome[5] == ("data", b"conn2")


async def test_outbound_never_forwards_l5d_request_directives(
    start_proxy: StartProxy, grpc_backend: tuple[str, int]
) -> None:
    proxy = await start_proxy(grpc_backend)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy.outbound_addr.port}") as channel:
        meta = channel.unary_unary("/test.Echo/Meta", None, None)
        names = await meta(
            b"",
            metadata=(
                ("l5d-retry-http", "5xx"),
                ("l5d-timeout", "1s"),
                ("l5d-response-timeout", "1s"),
                ("x-app", "kept"),
            ),
        )
    forwarded = set(names.decode().split(","))
    assert "x-app" in forwarded
    assert not {n for n in forwarded if n.startswith("l5d-")}
