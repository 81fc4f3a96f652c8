"""Opaque TCP through a real proxy on loopback: both copy paths, half-close, server-first."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from gossamer_proxy.app import Proxy

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]
Backend = tuple[str, int, dict[str, Any]]
ReadResponse = Callable[[asyncio.StreamReader], Awaitable[tuple[int, dict[str, str], bytes]]]

pytestmark = pytest.mark.timeout(60)

SPLICE = pytest.mark.parametrize("splice", ["true", "false"], ids=["splice", "relay"])


async def _half_close_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads until the client half-closes, then answers with a digest and what it got."""
    digest = hashlib.sha256()
    size = 0
    while data := await reader.read(1 << 16):
        digest.update(data)
        size += len(data)
    writer.write(b"%d %s\n" % (size, digest.hexdigest().encode()))
    await writer.drain()
    writer.close()


@SPLICE
async def test_bulk_transfer_with_half_close(
    start_proxy: StartProxy, tcp_server: TcpServer, splice: str
) -> None:
    target = await tcp_server(_half_close_echo)
    proxy = await start_proxy(target, GOSSAMER_PROXY_SPLICE=splice)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    payload = os.urandom(1 << 20)
    digest = hashlib.sha256()
    for _ in range(16):  # 16 MiB, written faster than the echo can hash it
        writer.write(payload)
        digest.update(payload)
        await writer.drain()
    writer.write_eof()  # half-close: the answer must still come back
    answer = await asyncio.wait_for(reader.readline(), 30)
    assert answer == b"%d %s\n" % (16 << 20, digest.hexdigest().encode())
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    await asyncio.sleep(0.1)
    text = proxy.metrics.registry.render().decode()
    read_src = [
        line for line in text.splitlines()
        if line.startswith("tcp_read_bytes_total{") and 'peer="src"' in line
    ]  # fmt: skip
    assert sum(float(line.rsplit(" ", 1)[1]) for line in read_src) == 16 << 20


@SPLICE
async def test_echo_both_ways(start_proxy: StartProxy, tcp_server: TcpServer, splice: str) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    target = await tcp_server(echo)
    proxy = await start_proxy(target, GOSSAMER_PROXY_SPLICE=splice)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    for i in range(20):
        message = b"\x00binary-%d\xff" % i
        writer.write(message)
        assert await asyncio.wait_for(reader.readexactly(len(message)), 10) == message
    writer.close()


async def _banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 smtp.example ESMTP ready\r\n")
    await writer.drain()
    line = await reader.readline()
    writer.write(b"250 hello " + line)
    await writer.drain()
    writer.close()


@SPLICE
async def test_server_speaks_first_on_opaque_port_never_waits(
    start_proxy: StartProxy, tcp_server: TcpServer, splice: str
) -> None:
    target = await tcp_server(_banner)
    proxy = await start_proxy(
        target,
        GOSSAMER_PROXY_SPLICE=splice,
        LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT="60s",
        GOSSAMER_PROXY_OUTBOUND_PORTS_DISABLE_PROTOCOL_DETECTION=str(target[1]),
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    # Far below the 60s detect timeout: the banner can only come if detection was skipped.
    assert await asyncio.wait_for(reader.readline(), 10) == b"220 smtp.example ESMTP ready\r\n"
    writer.write(b"EHLO client\r\n")
    assert await asyncio.wait_for(reader.readline(), 10) == b"250 hello EHLO client\r\n"
    writer.close()


async def test_silent_client_becomes_opaque_after_detect_timeout(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    target = await tcp_server(_banner)
    proxy = await start_proxy(target, LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT="300ms")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    assert await asyncio.wait_for(reader.readline(), 10) == b"220 smtp.example ESMTP ready\r\n"
    writer.close()


async def test_non_http_client_bytes_go_opaque(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    target = await tcp_server(_half_close_echo)
    proxy = await start_proxy(target)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    writer.write(b"\x16\x03\x01\x00\x05hello")  # looks like TLS: not HTTP
    writer.write_eof()
    expected = hashlib.sha256(b"\x16\x03\x01\x00\x05hello").hexdigest().encode()
    assert await asyncio.wait_for(reader.readline(), 10) == b"10 " + expected + b"\n"
    writer.close()


@SPLICE
async def test_refused_upstream_closes_the_client(start_proxy: StartProxy, splice: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()
    proxy = await start_proxy(
        dead,
        GOSSAMER_PROXY_SPLICE=splice,
        GOSSAMER_PROXY_OUTBOUND_PORTS_DISABLE_PROTOCOL_DETECTION=str(dead[1]),
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


@SPLICE
async def test_upstream_reset_reaches_the_client(
    start_proxy: StartProxy, tcp_server: TcpServer, splice: str
) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    target = await tcp_server(reset)
    proxy = await start_proxy(target, GOSSAMER_PROXY_SPLICE=splice)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    writer.write(b"\x00\x01\x02")
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
