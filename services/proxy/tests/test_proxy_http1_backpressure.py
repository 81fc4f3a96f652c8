"""HTTP/1 backpressure on the responses the proxy makes itself, on loopback.

A client that pipelines requests and never reads the answers must not make the proxy
buffer them without bound: the proxy stops parsing (and reading) further requests while
its write buffer to that client is over the high-water mark. The assertions look at what
the proxy buffered and read, never at how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from gossamer_proxy.app import Proxy
from gossamer_proxy.http1.server import Http1Server
from raw_h2 import until

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]
Response = tuple[int, dict[str, str], bytes]

pytestmark = pytest.mark.timeout(90)

DENIED = b"GET / HTTP/1.1\r\nhost: app\r\n\r\n"


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _deny_all_proxy(start_proxy: StartProxy) -> Proxy:
    return await start_proxy(
        GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"127.0.0.1:{_dead_port()}",
        LINKERD2_PROXY_INBOUND_DEFAULT_POLICY="deny",
    )


async def _http1_server_of(proxy: Proxy) -> Http1Server:
    ctx = next(c for c in proxy.contexts if c.direction == "inbound")
    await until(lambda: any(isinstance(c, Http1Server) for c in ctx.connections), "the server")
    return next(c for c in ctx.connections if isinstance(c, Http1Server))


async def test_pipelined_denied_requests_from_a_client_that_never_reads_are_bounded(
    start_proxy: StartProxy,
) -> None:
    proxy = await _deny_all_proxy(start_proxy)
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", proxy.inbound_addr.port))
    await loop.sock_sendall(sock, DENIED)
    server = await _http1_server_of(proxy)
    transport: Any = server.transport
    assert transport is not None
    chunk = DENIED * (65536 // len(DENIED))
    total = 200 * len(chunk)  # ~450k requests, 13 MB
    sent = peak = 0
    ctx = next(c for c in proxy.contexts if c.direction == "inbound")
    try:
        for _ in range(200):
            send = asyncio.ensure_future(loop.sock_sendall(sock, chunk))
            while not send.done():
                await asyncio.wait({send}, timeout=0.05)
                peak = max(peak, transport.get_write_buffer_size())
                if not send.done() and not transport.is_reading():
                    send.cancel()
                    break
            if not send.done() or send.cancelled() or send.exception() is not None:
                break
            sent += len(chunk)
            peak = max(peak, transport.get_write_buffer_size())
        await until(
            lambda: not transport.is_reading() or server.tcp.read.value >= sent + len(DENIED),
            "the proxy to read",
        )
        peak = max(peak, transport.get_write_buffer_size())
        assert not transport.is_reading()
        assert sent < total
        # The proxy holds its high-water mark plus at most one answer, not megabytes.
        assert peak < 256 * 1024, peak
        # Left idle, the connection is aborted: a graceful close would wait for the client
        # to read, forever.
        now = loop.time()
        server.tick(now)
        server.tick(now + ctx.limits.idle_timeout)
        server.tick(now + ctx.limits.idle_timeout + 1)
        await until(lambda: server not in ctx.connections, "the abort")
    finally:
        sock.close()


async def test_pipelined_answers_resume_once_the_client_reads(
    start_proxy: StartProxy,
) -> None:
    """Requests held back while the client did not read are all answered, in order, later."""
    proxy = await _deny_all_proxy(start_proxy)
    count = 20_000  # about 1.9 MB of 403s: many times the high-water mark
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", proxy.inbound_addr.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /first HTTP/1.1\r\nhost: app\r\n\r\n")
    server = await _http1_server_of(proxy)
    transport: Any = server.transport
    requests = b"".join(b"GET /%d HTTP/1.1\r\nhost: app\r\n\r\n" % i for i in range(count - 2))
    writer.write(requests + b"GET /last HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n")
    await until(lambda: not transport.is_reading(), "the proxy to stop reading")
    answers = await asyncio.wait_for(reader.read(), 30)  # to EOF: the last asked to close
    writer.close()
    assert answers.count(b"HTTP/1.1 403 ") == count
    assert answers.endswith(b"connection: close\r\nl5d-proxy-connection: close\r\n\r\n")


async def test_pipelined_requests_wait_unparsed_behind_the_one_in_flight(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    """A read of thousands of pipelined requests queues one exchange, not thousands; all
    are answered, in order, once the backend answers."""
    release = asyncio.Event()

    async def held_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while head := await reader.readuntil(b"\r\n\r\n"):
                path = head.split(b" ", 2)[1]
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(path), path))
                await writer.drain()
        writer.close()

    proxy = await start_proxy(await tcp_server(held_backend))
    ctx = next(c for c in proxy.contexts if c.direction == "outbound")
    count = 5000
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    writer.write(
        b"".join(b"GET /%d HTTP/1.1\r\nhost: app\r\n\r\n" % i for i in range(count - 1))
        + b"GET /last HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n"
    )
    await writer.drain()
    await until(lambda: any(isinstance(c, Http1Server) for c in ctx.connections), "the server")
    server = next(c for c in ctx.connections if isinstance(c, Http1Server))
    await until(lambda: server.tcp.read.value > 64 * 1024, "the proxy to read the requests")
    await until(lambda: not server.transport or not server.transport.is_reading(), "a pause")
    # Parsed so far: the request in flight and the one queued behind it.
    assert len(server._queue) <= 2, len(server._queue)
    release.set()
    answers = await asyncio.wait_for(reader.read(), 60)  # to EOF: the last asked to close
    writer.close()
    bodies = answers.split(b"\r\n\r\n")[1:]
    assert len(bodies) == count
    assert [b.split(b"HTTP/1.1")[0] for b in bodies[:3]] == [b"/0", b"/1", b"/2"]
    assert bodies[-1] == b"/last"
