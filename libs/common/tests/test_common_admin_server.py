"""The admin server end to end on 127.0.0.1 with a real HTTP client (httpx), plus raw sockets."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import httpx
import pytest
from gossamer_common.admin import (
    AdminRequest,
    AdminResponse,
    AdminServer,
    accepts_gzip,
    is_loopback,
    text_response,
)
from gossamer_common.metrics import Registry


class State:
    ready = False
    shutdowns = 0


@pytest.fixture
async def admin() -> AsyncIterator[tuple[AdminServer, State, str]]:
    state = State()
    registry = Registry()
    registry.counter("request_total", "Requests.").value += 3

    def shutdown() -> None:
        state.shutdowns += 1

    server = AdminServer(
        registry=registry,
        ready=lambda: state.ready,
        on_shutdown=shutdown,
        shutdown_enabled=True,
        idle_timeout=0.5,
        request_timeout=0.5,
        max_header_bytes=1024,
    )

    async def echo(req: AdminRequest) -> AdminResponse:
        return AdminResponse(200, (("x-method", req.method),), req.body[::-1])

    async def boom(req: AdminRequest) -> AdminResponse:
        raise RuntimeError("handler bug")

    server.add_route("/echo", echo, methods=("POST", "PUT"))
    server.add_route("/boom", boom)
    server.add_route("/local", echo, methods=("GET",), loopback_only=True)
    await server.start("127.0.0.1", 0)
    try:
        yield server, state, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close(grace=1.0)


async def test_live_ready_metrics(admin: tuple[AdminServer, State, str]) -> None:
    _server, state, base = admin
    async with httpx.AsyncClient(base_url=base) as client:
        r = await client.get("/live")
        assert (r.status_code, r.text) == (200, "live\n")
        r = await client.get("/ready")
        assert (r.status_code, r.text) == (503, "not ready\n")
        state.ready = True
        r = await client.get("/ready")
        assert (r.status_code, r.text) == (200, "ready\n")
        r = await client.get("/metrics", headers={"accept-encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip"
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "request_total 3\n" in r.text  # httpx decompressed it
        r = await client.get("/metrics", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in r.headers
        assert "# TYPE request_total counter" in r.text
        r = await client.get("/nope")
        assert r.status_code == 404
        r = await client.post("/live")
        assert r.status_code == 405
        assert r.headers["allow"] == "GET, HEAD"


async def test_custom_routes_and_failing_handler(admin: tuple[AdminServer, State, str]) -> None:
    _server, _state, base = admin
    async with httpx.AsyncClient(base_url=base) as client:
        r = await client.put("/echo", content=b"abc")
        assert (r.status_code, r.content, r.headers["x-method"]) == (200, b"cba", "PUT")
        r = await client.get("/boom")
        assert (r.status_code, r.text) == (500, "internal error\n")
        r = await client.get("/local")
        assert r.status_code == 200  # we are on loopback
        r = await client.get("/live")  # the connection survived the failing handler
        assert r.status_code == 200


async def test_shutdown_endpoint(admin: tuple[AdminServer, State, str]) -> None:
    _server, state, base = admin
    async with httpx.AsyncClient(base_url=base) as client:
        r = await client.get("/shutdown")
        assert r.status_code == 405
        assert state.shutdowns == 0
        r = await client.post("/shutdown")
        assert (r.status_code, r.text) == (200, "shutdown\n")
        assert state.shutdowns == 1


async def test_shutdown_disabled_is_404() -> None:
    called: list[int] = []
    server = AdminServer(on_shutdown=lambda: called.append(1), shutdown_enabled=False)
    req = AdminRequest("POST", "/shutdown", "", (), b"", "127.0.0.1")
    assert (await server.dispatch(req)).status == 404
    req = AdminRequest("GET", "/metrics", "", (), b"", "127.0.0.1")
    assert (await server.dispatch(req)).status == 404  # no registry, no /metrics
    assert called == []


async def test_shutdown_and_loopback_routes_refuse_remote_peers() -> None:
    called: list[int] = []
    server = AdminServer(on_shutdown=lambda: called.append(1), shutdown_enabled=True)

    async def h(req: AdminRequest) -> AdminResponse:
        return text_response(200, "ok")

    server.add_route("/local", h, loopback_only=True)

    async def status(method: str, path: str, peer: str) -> int:
        return (await server.dispatch(AdminRequest(method, path, "", (), b"", peer))).status

    for peer in ("10.0.0.7", "::ffff:10.0.0.7", "fe80::1"):
        assert await status("POST", "/shutdown", peer) == 403
        assert await status("GET", "/local", peer) == 403
    assert called == []
    assert await status("POST", "/shutdown", "::1") == 200
    assert called == [1]


def test_route_registration_errors() -> None:
    server = AdminServer()

    async def h(req: AdminRequest) -> AdminResponse:
        return text_response(200, "ok")

    with pytest.raises(ValueError, match="already registered"):
        server.add_route("/live", h)
    with pytest.raises(ValueError, match="already registered"):
        server.add_route("/shutdown", h)
    with pytest.raises(ValueError, match="must start with"):
        server.add_route("x", h)


def test_accepts_gzip_and_loopback_helpers() -> None:
    assert accepts_gzip("gzip, deflate")
    assert accepts_gzip("deflate, *")
    assert accepts_gzip("GZIP;q=0.5")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("gzip;q=0, *")
    assert not accepts_gzip("gzip;q=bad")
    assert not accepts_gzip(None)
    assert not accepts_gzip("identity")
    assert is_loopback("127.0.0.5")
    assert is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("192.168.1.1")
    assert not is_loopback("")


async def raw_exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    async with asyncio.timeout(5):
        response = await reader.read()  # until the server closes
    writer.close()
    await writer.wait_closed()
    return response


async def test_malformed_request_gets_400_and_close(admin: tuple[AdminServer, State, str]) -> None:
    server, _state, _base = admin
    response = await raw_exchange(server.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close" in response
    assert response.endswith(b"malformed request line\n")


async def test_oversized_headers_get_431(admin: tuple[AdminServer, State, str]) -> None:
    server, _state, _base = admin
    response = await raw_exchange(
        server.port, b"GET /live HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 2048 + b"\r\n\r\n"
    )
    assert response.startswith(b"HTTP/1.1 431 ")


async def test_pipelined_and_http10_and_head(admin: tuple[AdminServer, State, str]) -> None:
    server, _state, _base = admin
    response = await raw_exchange(
        server.port,
        b"GET /live HTTP/1.1\r\nHost: a\r\n\r\nHEAD /live HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /live HTTP/1.0\r\n\r\n",
    )
    assert response.count(b"HTTP/1.1 200 OK") == 3
    assert response.count(b"live\n") == 2  # HEAD has no body
    assert response.endswith(b"connection: close\r\n\r\nlive\n")


async def test_partial_request_times_out_with_408(admin: tuple[AdminServer, State, str]) -> None:
    server, _state, _base = admin
    response = await raw_exchange(server.port, b"GET /live HTTP/1.1\r\nHo")
    assert response.startswith(b"HTTP/1.1 408 ")


async def test_idle_connection_is_closed(admin: tuple[AdminServer, State, str]) -> None:
    server, _state, _base = admin
    assert await raw_exchange(server.port, b"") == b""


async def test_gzip_body_is_valid(admin: tuple[AdminServer, State, str]) -> None:
    server, _state, _base = admin
    response = await raw_exchange(
        server.port,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    _head, _, body = response.partition(b"\r\n\r\n")
    assert b"request_total 3" in gzip.decompress(body)


async def test_close_lets_in_flight_request_finish() -> None:
    release = asyncio.Event()

    async def slow(req: AdminRequest) -> AdminResponse:
        await release.wait()
        return text_response(200, "done\n")

    server = AdminServer()
    server.add_route("/slow", slow)
    await server.start("127.0.0.1", 0)
    port = server.port
    async with httpx.AsyncClient() as client:
        in_flight = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/slow"))
        for _ in range(200):
            if any(c.busy for c in server._connections.values()):
                break
            await asyncio.sleep(0.01)
        closing = asyncio.create_task(server.close(grace=5))
        await asyncio.sleep(0.05)
        assert not closing.done()
        release.set()
        r = await in_flight
        await closing
    assert (r.status_code, r.text) == (200, "done\n")
    assert r.headers["connection"] == "close"
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_chunk_size_line_with_endless_extension_gets_400(
    admin: tuple[AdminServer, State, str],
) -> None:
    server, _state, _base = admin
    response = await raw_exchange(
        server.port,
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;"
        + b"e" * 4096
        + b"\r\nx\r\n0\r\n\r\n",
    )
    assert response.startswith(b"HTTP/1.1 400 ")
    assert response.endswith(b"chunk size line too long\n")


@pytest.mark.timeout(120)
async def test_half_a_megabyte_of_one_byte_chunks_is_served() -> None:
    """The 1-byte-chunk body that used to cost ~18 s of loop time is parsed in one pass."""
    server = AdminServer(request_timeout=60.0)

    async def size(req: AdminRequest) -> AdminResponse:
        return text_response(200, f"{len(req.body)}\n")

    server.add_route("/size", size, methods=("POST",))
    await server.start("127.0.0.1", 0)
    try:
        count = 512 * 1024
        response = await raw_exchange(
            server.port,
            b"POST /size HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * count + b"0\r\n\r\n",
        )
    finally:
        await server.close(grace=1.0)
    assert response.startswith(b"HTTP/1.1 200 ")
    assert response.endswith(b"%d\n" % count)
