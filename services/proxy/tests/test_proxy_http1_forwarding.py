"""HTTP/1.1 through a real proxy on loopback: real sockets, real clients, real backends."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import websockets
from aiohttp import web
from gossamer_proxy.app import Proxy
from gossamer_proxy.http1.server import Http1Server

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]
Backend = tuple[str, int, dict[str, Any]]
ReadResponse = Callable[[asyncio.StreamReader], Awaitable[tuple[int, dict[str, str], bytes]]]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def app_backend() -> AsyncIterator[Backend]:
    """An aiohttp app; ``seen`` records what reached it."""
    seen: dict[str, Any] = {"peers": set(), "headers": [], "bodies": []}

    async def echo(request: web.Request) -> web.StreamResponse:
        seen["peers"].add(
            request.transport.get_extra_info("peername") if request.transport else None
        )
        seen["headers"].append(dict(request.headers))
        size = 0
        async for piece in request.content.iter_any():
            size += len(piece)
        seen["bodies"].append(size)
        return web.Response(text=f"{request.method} {request.path_qs} {size}")

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(5):
            await resp.write(b"part%d;" % i)
        await resp.write_eof()
        return resp

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            await sock.send_str("echo:" + msg.data)
        return sock

    app = web.Application(client_max_size=1 << 30)
    app.router.add_get("/stream", stream)
    app.router.add_get("/ws", ws)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield "127.0.0.1", port, seen
    await runner.cleanup()


def _metric(text: str, name: str, *needles: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(n in line for n in needles):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_keepalive_reuses_one_upstream_connection(
    start_proxy: StartProxy, app_backend: Backend
) -> None:
    host, port, seen = app_backend
    proxy = await start_proxy((host, port))
    url = f"http://127.0.0.1:{proxy.outbound_addr.port}"
    async with httpx.AsyncClient(base_url=url) as client:
        for i in range(20):
            r = await client.get(f"/item/{i}?q=1")
            assert r.status_code == 200
            assert r.text == f"GET /item/{i}?q=1 0"
    assert len(seen["peers"]) == 1
    async with httpx.AsyncClient() as admin:
        text = (await admin.get(f"http://127.0.0.1:{proxy.admin_port}/metrics")).text
    assert _metric(text, "request_total", 'direction="outbound"') == 20
    assert _metric(text, "response_total", 'status_code="200"', 'classification="success"') == 20
    assert _metric(text, "tcp_open_total", 'peer="dst"') == 1
    assert _metric(text, "response_latency_ms_count") == 20


async def test_request_and_response_bodies_stream(
    start_proxy: StartProxy, app_backend: Backend
) -> None:
    host, port, seen = app_backend
    proxy = await start_proxy((host, port))
    url = f"http://127.0.0.1:{proxy.outbound_addr.port}"
    total = 8 * 1024 * 1024

    async def chunks() -> AsyncIterator[bytes]:
        piece = b"z" * 65536
        for _ in range(total // len(piece)):
            yield piece

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        r = await client.post("/upload", content=chunks())  # chunked upload
        assert r.text == f"POST /upload {total}"
        r = await client.put("/fixed", content=b"x" * 1_000_000)  # content-length upload
        assert r.text == "PUT /fixed 1000000"
        r = await client.get("/stream")
        assert r.text == "part0;part1;part2;part3;part4;"
        assert r.headers["transfer-encoding"] == "chunked"
        r = await client.head("/x")
        assert r.status_code == 200
        assert r.content == b""
        assert r.headers["content-length"] == str(len("HEAD /x 0"))
    hop = [h for h in seen["headers"] if "Keep-Alive" in h or "Proxy-Connection" in h]
    assert hop == []


async def test_expect_100_continue_is_relayed(
    start_proxy: StartProxy, app_backend: Backend
) -> None:
    host, port, _ = app_backend
    proxy = await start_proxy((host, port))
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-v", "-H", "Expect: 100-continue", "--data-binary", "@-",
        f"http://127.0.0.1:{proxy.outbound_addr.port}/upload",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(b"y" * 200_000), 30)
    assert proc.returncode == 0
    assert b"HTTP/1.1 100 Continue" in err
    assert out == b"POST /upload 200000"


async def test_pipelined_requests_answer_in_order(
    start_proxy: StartProxy, app_backend: Backend, response_reader: ReadResponse
) -> None:
    host, port, _ = app_backend
    proxy = await start_proxy((host, port))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    writer.write(
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /three HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    bodies = [(await response_reader(reader))[2] for _ in range(3)]
    assert bodies == [b"GET /one 0", b"POST /two 3", b"GET /three 0"]
    writer.close()


async def test_websocket_upgrade_becomes_opaque(
    start_proxy: StartProxy, app_backend: Backend
) -> None:
    host, port, _ = app_backend
    proxy = await start_proxy((host, port))
    async with websockets.connect(f"ws://127.0.0.1:{proxy.outbound_addr.port}/ws") as ws:
        for i in range(10):
            await ws.send(f"m{i}")
            assert await ws.recv() == f"echo:m{i}"


async def test_http10_client_gets_close_delimited_stream(
    start_proxy: StartProxy, app_backend: Backend
) -> None:
    host, port, _ = app_backend
    proxy = await start_proxy((host, port))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    writer.write(b"GET /stream HTTP/1.0\r\n\r\n")
    data = await asyncio.wait_for(reader.read(-1), 10)  # the proxy closes at the end
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    assert body == b"part0;part1;part2;part3;part4;"
    writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET /" + b"p" * 70_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
    ],
)
async def test_bad_requests_get_a_clear_error(
    start_proxy: StartProxy,
    app_backend: Backend,
    response_reader: ReadResponse,
    request_bytes: bytes,
    status: int,
) -> None:
    host, port, seen = app_backend
    proxy = await start_proxy((host, port))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    writer.write(request_bytes)
    got, headers, _ = await asyncio.wait_for(response_reader(reader), 10)
    assert got == status
    assert headers["connection"] == "close"
    assert "l5d-proxy-error" in headers
    assert await asyncio.wait_for(reader.read(), 10) == b""  # and the connection closes
    assert seen["bodies"] == []  # nothing reached the app
    writer.close()


async def test_connect_refused_is_502_with_l5d_proxy_error(start_proxy: StartProxy) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    proxy = await start_proxy(("127.0.0.1", dead_port))
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{proxy.outbound_addr.port}/")
        assert r.status_code == 502
        assert r.headers["l5d-proxy-error"].startswith("connection refused")
        r2 = await client.get(f"http://127.0.0.1:{proxy.outbound_addr.port}/again")
        assert r2.status_code == 502  # the client connection survived the first error
        text = (await client.get(f"http://127.0.0.1:{proxy.admin_port}/metrics")).text
    assert _metric(text, "response_total", 'status_code="502"', 'classification="failure"') == 2


async def test_connect_timeout_is_504(start_proxy: StartProxy) -> None:
    # A listener whose accept queue is full drops further SYNs: connects hang until timeout.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(0)
    fillers = []
    try:
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                f.connect(blocker.getsockname())
            fillers.append(f)
        await asyncio.sleep(0.2)
        proxy = await start_proxy(
            blocker.getsockname(), LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT="300ms"
        )
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(f"http://127.0.0.1:{proxy.outbound_addr.port}/")
        assert r.status_code == 504
        assert r.headers["l5d-proxy-error"].startswith("connect timed out")
    finally:
        for f in fillers:
            f.close()
        blocker.close()


async def test_stale_pooled_connection_is_retried(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    """The server closes each connection right after answering (without saying so)."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    target = await tcp_server(handler)
    proxy = await start_proxy(target)
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            r = await client.get(f"http://127.0.0.1:{proxy.outbound_addr.port}/")
            assert r.status_code == 200
            assert r.text == "ok"
            await asyncio.sleep(0.2)
    assert connections == 3


async def test_truncated_response_aborts_the_client(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part")
        await writer.drain()
        writer.close()

    target = await tcp_server(handler)
    proxy = await start_proxy(target)
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.HTTPError):
            await client.get(f"http://127.0.0.1:{proxy.outbound_addr.port}/")


async def test_slowloris_head_gets_408_and_close(
    start_proxy: StartProxy, app_backend: Backend, response_reader: ReadResponse
) -> None:
    host, port, _ = app_backend
    proxy = await start_proxy((host, port), GOSSAMER_PROXY_HTTP1_HEAD_TIMEOUT="1s")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    writer.write(b"GET / HTTP/1.1\r\n")
    for _ in range(40):  # trickle a header byte at a time; bounded
        if reader.at_eof():
            break
        with contextlib.suppress(ConnectionError):
            writer.write(b"X")
            await writer.drain()
        await asyncio.sleep(0.1)
        if reader._buffer:  # type: ignore[attr-defined]
            break
    status, headers, _ = await asyncio.wait_for(response_reader(reader), 10)
    assert status == 408
    assert headers["connection"] == "close"
    writer.close()


async def test_idle_keepalive_client_is_closed(
    start_proxy: StartProxy, app_backend: Backend
) -> None:
    host, port, _ = app_backend
    proxy = await start_proxy((host, port), GOSSAMER_PROXY_CLIENT_IDLE_TIMEOUT="1s")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    writer.write(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
    await reader.readuntil(b"GET /a 0")
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_direct_connection_to_listener_is_refused_as_a_loop(start_proxy: StartProxy) -> None:
    proxy = await start_proxy()  # no fixed target: SO_ORIGINAL_DST is the listener itself
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_l5d_headers_are_consumed_outbound(
    start_proxy: StartProxy, app_backend: Backend
) -> None:
    host, port, seen = app_backend
    proxy = await start_proxy((host, port))
    async with httpx.AsyncClient() as client:
        r = await client.get(
            f"http://127.0.0.1:{proxy.outbound_addr.port}/",
            headers={"l5d-dst-override": "web.ns.svc.cluster.local:80", "x-app": "1"},
        )
    assert r.status_code == 200
    assert "l5d-dst-override" not in {k.lower() for k in seen["headers"][0]}
    assert seen["headers"][0]["x-app"] == "1"


async def test_inbound_strips_spoofed_client_identity(
    start_proxy: StartProxy, app_backend: Backend
) -> None:
    host, port, seen = app_backend
    proxy = await start_proxy(GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"{host}:{port}")
    async with httpx.AsyncClient() as client:
        r = await client.get(
            f"http://127.0.0.1:{proxy.inbound_addr.port}/",
            headers={"l5d-client-id": "admin.ns.serviceaccount.identity.x.cluster.local"},
        )
    assert r.status_code == 200
    assert "l5d-client-id" not in {k.lower() for k in seen["headers"][0]}


async def test_early_response_closes_after_answering(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig")
        await writer.drain()
        writer.close()

    target = await tcp_server(handler)
    proxy = await start_proxy(target)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n" + b"a" * 1000)
    data = await asyncio.wait_for(reader.read(-1), 10)
    assert data.startswith(b"HTTP/1.1 413")
    assert b"connection: close" in data
    assert data.endswith(b"big")
    writer.close()


async def test_graceful_shutdown_drains_in_flight(
    start_proxy: StartProxy, tcp_server: TcpServer, response_reader: ReadResponse
) -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await release.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
        await writer.drain()
        writer.close()

    target = await tcp_server(handler)
    proxy = await start_proxy(target)
    port = proxy.outbound_addr.port
    busy_r, busy_w = await asyncio.open_connection("127.0.0.1", port)
    busy_w.write(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
    idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(0.2)
    shutdown = asyncio.ensure_future(proxy.shutdown())
    assert await asyncio.wait_for(idle_r.read(), 5) == b""  # idle connection closed at once
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)  # no longer accepting
    assert not shutdown.done()
    release.set()
    status, headers, body = await asyncio.wait_for(response_reader(busy_r), 10)
    assert (status, body) == (200, b"done")
    assert headers["connection"] == "close"
    assert await asyncio.wait_for(shutdown, 10) is True
    busy_w.close()
    idle_w.close()


async def test_stalled_request_body_is_aborted(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    upstream_closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        while await reader.read(1024):
            pass
        upstream_closed.set()  # the proxy gave up on the request and closed upstream
        writer.close()

    target = await tcp_server(handler)
    proxy = await start_proxy(target, GOSSAMER_PROXY_HTTP1_BODY_STALL_TIMEOUT="1s")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly-ten-b")
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), 15) == b""
    await asyncio.wait_for(upstream_closed.wait(), 15)
    writer.close()


async def test_client_eof_mid_body_aborts_upstream(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    upstream_closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        while await reader.read(1024):
            pass
        upstream_closed.set()
        writer.close()

    target = await tcp_server(handler)
    proxy = await start_proxy(target)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\npartial")
    await asyncio.sleep(0.1)
    writer.write_eof()
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), 10) == b""
    await asyncio.wait_for(upstream_closed.wait(), 10)
    writer.close()


async def test_too_many_trailers_are_refused(
    start_proxy: StartProxy, app_backend: Backend, response_reader: ReadResponse
) -> None:
    host, port, _ = app_backend
    proxy = await start_proxy((host, port), GOSSAMER_PROXY_HTTP1_MAX_HEADERS="16")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    trailers = b"".join(b"X-T%d: v\r\n" % i for i in range(40))
    writer.write(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n" + trailers + b"\r\n"
    )
    # The request is abandoned (upstream aborted) and the client told why, then closed.
    status, headers, _ = await asyncio.wait_for(response_reader(reader), 10)
    assert status == 431
    assert headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_garbage_from_upstream_is_502(start_proxy: StartProxy, tcp_server: TcpServer) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()
        writer.close()

    target = await tcp_server(handler)
    proxy = await start_proxy(target)
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{proxy.outbound_addr.port}/")
    assert r.status_code == 502
    assert r.headers["l5d-proxy-error"] == "invalid HTTP response from server"


async def test_upstream_proxy_connection_close_closes_the_client(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nl5d-proxy-connection: close\r\nContent-Length: 2\r\n\r\nok"
        )
        await writer.drain()

    target = await tcp_server(handler)
    proxy = await start_proxy(target)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close\r\n" in data
    assert b"l5d-proxy-connection" not in data
    assert data.endswith(b"\r\n\r\nok")
    writer.close()


async def _forward_in_two_reads(
    start_proxy: StartProxy,
    tcp_server: TcpServer,
    response_reader: ReadResponse,
    monkeypatch: pytest.MonkeyPatch,
    first: bytes,
    second: bytes,
) -> tuple[int, bytes]:
    """Send a request as exactly two reads of the proxy (``first`` from the client's
    socket, ``second`` handed to its server's ``data_received``), so where the one ends
    does not depend on how the kernel splits the bytes; the upstream echoes the body.
    """
    servers: list[Http1Server] = []
    bytes_read = [0]
    first_read = asyncio.Event()
    original = Http1Server.data_received

    def data_received(server: Http1Server, data: bytes) -> None:
        servers.append(server)
        original(server, data)
        bytes_read[0] += len(data)
        if bytes_read[0] == len(first):
            first_read.set()

    monkeypatch.setattr(Http1Server, "data_received", data_received)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_head = await reader.readuntil(b"\r\n\r\n")
        length = int(request_head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        received = await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length + received)
        await writer.drain()
        writer.close()

    proxy = await start_proxy(await tcp_server(handler))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    try:
        writer.write(first)
        await asyncio.wait_for(first_read.wait(), 10)
        original(servers[-1], second)
        status, _, received = await asyncio.wait_for(response_reader(reader), 30)
    finally:
        writer.close()
    return status, received


@pytest.mark.parametrize("split", [1, 2, 3])
async def test_a_head_end_split_across_reads_before_a_large_body_is_forwarded(
    start_proxy: StartProxy,
    tcp_server: TcpServer,
    response_reader: ReadResponse,
    monkeypatch: pytest.MonkeyPatch,
    split: int,
) -> None:
    """The blank line ending a request head may arrive with more body than the head room."""
    body = b"b" * 100_000
    head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body)
    first, second = head[:-split], head[-split:] + body
    args = (start_proxy, tcp_server, response_reader, monkeypatch)
    assert await _forward_in_two_reads(*args, first, second) == (200, body)


async def test_a_head_past_the_limit_is_refused_when_its_end_follows_a_read_end(
    start_proxy: StartProxy,
    tcp_server: TcpServer,
    response_reader: ReadResponse,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read may finish a head begun in the last, but not one longer than the limit."""
    first = b"POST / HTTP/1.1\r\nHost: a\r\nX-A: " + b"a" * 60_000 + b"\r\n"
    second = b"X-B: " + b"b" * 10_000 + b"\r\nContent-Length: 1\r\n\r\n" + b"x" * 20_000
    args = (start_proxy, tcp_server, response_reader, monkeypatch)
    assert (await _forward_in_two_reads(*args, first, second))[0] == 431


async def test_huge_hosts_are_not_kept_by_the_connection(
    start_proxy: StartProxy,
    tcp_server: TcpServer,
    response_reader: ReadResponse,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client's authorities are kept per connection (for its metrics), but not huge ones:
    16 Hosts near the head limit would pin 16 times that limit for the connection's life."""
    servers: list[Http1Server] = []
    original = Http1Server.data_received

    def data_received(server: Http1Server, data: bytes) -> None:
        servers.append(server)
        original(server, data)

    monkeypatch.setattr(Http1Server, "data_received", data_received)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        writer.close()

    proxy = await start_proxy(await tcp_server(handler))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    try:
        for i in range(8):
            host = b"h%d" % i + b"x" * 60_000
            writer.write(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
            assert (await asyncio.wait_for(response_reader(reader), 30))[0] == 200
        writer.write(b"GET / HTTP/1.1\r\nHost: svc.example\r\n\r\n")
        assert (await asyncio.wait_for(response_reader(reader), 30))[0] == 200
        kept = servers[-1]._stats_cache
        assert sum(len(host or b"") for host in kept) < 1_000, [len(h or b"") for h in kept]
        assert b"svc.example" in kept
    finally:
        writer.close()


@pytest.mark.parametrize(("method", "sent_again"), [("GET", True), ("POST", False)])
async def test_a_request_lost_on_a_reused_connection_is_sent_again_only_if_idempotent(
    start_proxy: StartProxy, tcp_server: TcpServer, method: str, sent_again: bool
) -> None:
    """The server answers the first request, then reads the second and hangs up unanswered.

    It may have acted on that second request, so the proxy may send it again on a new
    connection only when its method is idempotent; a POST gets the error instead.
    """
    requests: list[tuple[int, bytes]] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        n = connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                requests.append((n, head.split(b" ", 1)[0]))
                if n == 1 and len(requests) == 2:
                    break  # the second request on the first connection: no answer
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    proxy = await start_proxy(await tcp_server(handler))
    url = f"http://127.0.0.1:{proxy.outbound_addr.port}/"
    async with httpx.AsyncClient(timeout=10) as client:
        first = await client.get(url)
        second = await client.request(method, url)
    assert first.status_code == 200
    if sent_again:
        assert second.status_code == 200
        assert requests == [(1, b"GET"), (1, b"GET"), (2, b"GET")]
    else:
        assert second.status_code == 502
        assert requests == [(1, b"GET"), (1, b"POST")]
