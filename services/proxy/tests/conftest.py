"""Fixtures for the transparent proxy's loopback tests (``test_proxy_*``).

A real proxy on 127.0.0.1 with real backends.

Tests run on uvloop, the loop the proxy uses in production. The proxy's outbound listener
gets a fixed target (the backend), since loopback tests have no iptables redirect.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop
from gossamer_proxy.app import Proxy
from gossamer_proxy.config import load_settings
from gossamer_tls import TrustMaterial

# Shared test helpers beside this file (``fake_control_plane``) import by module name.
sys.path.insert(0, str(Path(__file__).parent))

import mesh_pki

StartProxy = Callable[..., Awaitable[Proxy]]
Response = tuple[int, dict[str, str], bytes]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """uvloop for the transparent-proxy tests; other tests here keep the default loop."""
    if item.path.name.startswith("test_proxy_"):
        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture
async def start_proxy() -> AsyncIterator[StartProxy]:
    """Start proxies on ephemeral loopback ports; every one is shut down after the test."""
    started: list[Proxy] = []

    async def start(target: tuple[str, int] | None = None, **env: str) -> Proxy:
        values = {
            "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS": "127.0.0.1:0",
            "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "127.0.0.1:0",
            "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "127.0.0.1:0",
            "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD": "5s",
        }
        if target is not None:
            values["GOSSAMER_PROXY_OUTBOUND_FIXED_TARGET"] = f"{target[0]}:{target[1]}"
        values.update(env)
        proxy = Proxy(load_settings(values), process_metrics=False)
        await proxy.start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proxy.shutdown(), 10)


@pytest.fixture
async def tcp_server() -> AsyncIterator[Callable[..., Awaitable[tuple[str, int]]]]:
    """Start raw asyncio stream servers (closed after the test); returns (host, port)."""
    servers: list[asyncio.Server] = []

    async def start(handler: Callable[..., Awaitable[Any]], **kwargs: Any) -> tuple[str, int]:
        server = await asyncio.start_server(handler, "127.0.0.1", 0, **kwargs)
        servers.append(server)
        host, port = server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    yield start
    for server in servers:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


async def read_response(reader: asyncio.StreamReader) -> Response:
    """Read one HTTP/1.1 response with a content-length or chunked body (test helper)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size)
            await reader.readline()
    return status, headers, body


@pytest.fixture
def response_reader() -> Callable[[asyncio.StreamReader], Awaitable[Response]]:
    return read_response


@pytest.fixture(scope="module")
def trust() -> TrustMaterial:
    """One mesh trust anchor and issuer per test module (:mod:`mesh_pki`)."""
    return mesh_pki.new_trust()
