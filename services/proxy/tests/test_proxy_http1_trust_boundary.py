"""HTTP/1 trust boundary through a real proxy on loopback (issue 16).

Host confusion, transfer-coding lists, h2c upgrade offers and trailers: what the client
sends, what the proxy answers and exactly which bytes reach the app.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from gossamer_proxy.app import Proxy

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]
ReadResponse = Callable[[asyncio.StreamReader], Awaitable[tuple[int, dict[str, str], bytes]]]

pytestmark = pytest.mark.timeout(60)


class Recorded:
    """One request as the app received it: raw head lines, decoded body, raw trailers."""

    def __init__(self, head: list[bytes], body: bytes, trailers: list[bytes]) -> None:
        self.head = head
        self.body = body
        self.trailers = trailers

    def fields(self, name: bytes) -> list[bytes]:
        found = []
        for line in self.head[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name:
                found.append(value.strip())
        return found

    def names(self) -> set[bytes]:
        return {line.partition(b":")[0].strip().lower() for line in self.head[1:]}

    def trailer_names(self) -> set[bytes]:
        return {line.partition(b":")[0].strip().lower() for line in self.trailers}


async def _raw_app(
    tcp_server: TcpServer, response: bytes
) -> tuple[tuple[str, int], list[Recorded]]:
    """A raw HTTP/1.1 app that records every request and answers each with ``response``."""
    seen: list[Recorded] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n"))[:-4].split(b"\r\n")
                rec = Recorded(head, b"", [])
                if rec.fields(b"transfer-encoding"):
                    body = b""
                    while True:
                        size = int((await reader.readline()).split(b";")[0].strip(), 16)
                        if size == 0:
                            break
                        body += (await reader.readexactly(size + 2))[:-2]
                    while (line := (await reader.readline()).rstrip(b"\r\n")) != b"":
                        rec.trailers.append(line)
                    rec.body = body
                elif lengths := rec.fields(b"content-length"):
                    rec.body = await reader.readexactly(int(lengths[0]))
                seen.append(rec)
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await tcp_server(handle), seen


_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def _exchange(proxy_port: int, request: bytes, read: ReadResponse) -> tuple[int, Any, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    writer.write(request)
    try:
        return await asyncio.wait_for(read(reader), 10)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /x HTTP/1.1\r\nHost: public.example\r\nHost: admin.internal\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: admin.internal\r\nhost: admin.internal\r\n\r\n",
        b"GET /x HTTP/1.1\r\nX-A: 1\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: user@admin.internal\r\n\r\n",
        b"GET http://user@admin.internal/x HTTP/1.1\r\nHost: admin.internal\r\n\r\n",
        b"GET ftp://admin.internal/x HTTP/1.1\r\nHost: admin.internal\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
    ],
)
async def test_host_confusion_and_bad_codings_get_400(
    start_proxy: StartProxy,
    tcp_server: TcpServer,
    response_reader: ReadResponse,
    request_bytes: bytes,
) -> None:
    backend, seen = await _raw_app(tcp_server, _OK)
    proxy = await start_proxy(backend)
    status, headers, _ = await _exchange(proxy.outbound_addr.port, request_bytes, response_reader)
    assert status == 400
    assert headers["connection"] == "close"
    assert seen == []  # nothing reached the app


async def test_http10_without_host_still_gets_one(
    start_proxy: StartProxy, tcp_server: TcpServer, response_reader: ReadResponse
) -> None:
    backend, seen = await _raw_app(tcp_server, _OK)
    proxy = await start_proxy(backend)
    status, _, _ = await _exchange(
        proxy.outbound_addr.port, b"GET /x HTTP/1.0\r\n\r\n", response_reader
    )
    assert status == 200
    assert len(seen[0].fields(b"host")) == 1


async def test_absolute_form_authority_replaces_host(
    start_proxy: StartProxy, tcp_server: TcpServer, response_reader: ReadResponse
) -> None:
    backend, seen = await _raw_app(tcp_server, _OK)
    proxy = await start_proxy(backend)
    status, _, body = await _exchange(
        proxy.outbound_addr.port,
        b"GET http://admin.internal/x?y=1 HTTP/1.1\r\nHost: public.example\r\n\r\n",
        response_reader,
    )
    assert (status, body) == (200, b"ok")
    assert seen[0].fields(b"host") == [b"admin.internal"]
    async with httpx.AsyncClient() as admin:
        text = (await admin.get(f"http://127.0.0.1:{proxy.admin_port}/metrics")).text
    requests = [line for line in text.splitlines() if line.startswith("request_total{")]
    assert any(f'authority="admin.internal:{backend[1]}"' in line for line in requests), requests
    assert "public.example" not in text


async def test_transfer_coding_list_is_kept_both_ways(
    start_proxy: StartProxy, tcp_server: TcpServer, response_reader: ReadResponse
) -> None:
    response = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"
        b"3\r\nGZ1\r\n2\r\nGZ\r\n0\r\n\r\n"
    )
    backend, seen = await _raw_app(tcp_server, response)
    proxy = await start_proxy(backend)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    writer.write(
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n4\r\n\x1f\x8b\x08\x00\r\n0\r\n\r\n"
    )
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).lower()
    writer.close()
    assert seen, head
    assert seen[0].fields(b"transfer-encoding") == [b"gzip, chunked"]
    assert seen[0].body == b"\x1f\x8b\x08\x00"
    assert b"transfer-encoding: gzip, chunked\r\n" in head


async def test_h2c_upgrade_offer_is_stripped(
    start_proxy: StartProxy, tcp_server: TcpServer, response_reader: ReadResponse
) -> None:
    backend, seen = await _raw_app(tcp_server, _OK)
    proxy = await start_proxy(backend)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    h2c = (
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n"
    )
    writer.write(
        b"GET /one HTTP/1.1\r\nHost: a\r\n" + h2c + b"\r\n"
        b"POST /two HTTP/1.1\r\nHost: a\r\n" + h2c + b"Content-Length: 5\r\n\r\nhello"
        b"POST /three HTTP/1.1\r\nHost: a\r\n" + h2c + b"Transfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
        b"GET /four HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    answers = [await asyncio.wait_for(response_reader(reader), 10) for _ in range(4)]
    writer.close()
    assert [status for status, _, _ in answers] == [200, 200, 200, 200]
    assert [rec.head[0].split(b" ")[1] for rec in seen] == [b"/one", b"/two", b"/three", b"/four"]
    assert [rec.body for rec in seen] == [b"", b"hello", b"abc", b""]
    for rec in seen:
        assert not rec.names() & {b"upgrade", b"http2-settings", b"connection"}, rec.head


async def test_websocket_upgrade_keeps_its_offer_without_h2c(
    start_proxy: StartProxy, tcp_server: TcpServer, response_reader: ReadResponse
) -> None:
    backend, seen = await _raw_app(
        tcp_server, b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"
    )
    proxy = await start_proxy(backend)
    status, _, _ = await _exchange(
        proxy.outbound_addr.port,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket, h2c\r\n\r\n",
        response_reader,
    )
    assert status == 400
    assert seen[0].fields(b"upgrade") == [b"websocket"]


async def test_request_trailers_are_filtered_inbound(
    start_proxy: StartProxy, tcp_server: TcpServer, response_reader: ReadResponse
) -> None:
    backend, seen = await _raw_app(tcp_server, _OK)
    proxy = await start_proxy(GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"{backend[0]}:{backend[1]}")
    status, _, _ = await _exchange(
        proxy.inbound_addr.port,
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\n"
        b"l5d-client-id: admin.ns.serviceaccount.identity.x.cluster.local\r\n"
        b"L5D-Dst-Override: admin:80\r\nHost: evil\r\nKeep-Alive: 1\r\nUpgrade: x\r\n"
        b"Connection: close\r\nTE: trailers\r\nX-Checksum: 7\r\n\r\n",
        response_reader,
    )
    assert status == 200
    assert seen[0].body == b"hi"
    assert seen[0].trailer_names() == {b"x-checksum"}


async def test_response_trailers_are_filtered(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    response = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
        b"l5d-proxy-error: forged\r\nkeep-alive: 1\r\ngrpc-status: 0\r\n\r\n"
    )
    backend, _ = await _raw_app(tcp_server, response)
    proxy = await start_proxy(backend)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n"), 10) == b"2\r\nok\r\n0\r\n"
    tail = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).lower()
    writer.close()
    assert b"grpc-status: 0" in tail
    assert b"l5d-proxy-error" not in tail
    assert b"keep-alive" not in tail


async def test_coded_response_is_not_handed_to_an_http10_client_as_plain(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    response = b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n3\r\nGZ1\r\n0\r\n\r\n"
    backend, _ = await _raw_app(tcp_server, response)
    proxy = await start_proxy(backend)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    writer.write(b"GET /x HTTP/1.0\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert data.startswith(b"HTTP/1.1 502 ")
    assert b"GZ1" not in data
