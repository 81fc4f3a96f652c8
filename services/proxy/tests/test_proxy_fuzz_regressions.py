"""Regressions found by ``make fuzz`` (fuzz/targets/http1_server.py, http2_frames.py).

Each drives a real proxy on loopback with the input the fuzzer found: an upstream ``:status``
that is not three digits is a bad gateway for that stream alone, and trailers filtered down
to nothing end the stream instead of breaking the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
from gossamer_proxy.app import Proxy

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]

pytestmark = pytest.mark.timeout(60)


def _h2_backend(response_headers: list[tuple[str, str]]) -> Callable[..., Awaitable[None]]:
    """An h2 server answering every request with ``response_headers`` (unvalidated)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, validate_outbound_headers=False)
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    conn.send_headers(event.stream_id, response_headers, end_stream=True)
            writer.write(conn.data_to_send())
            await writer.drain()
        writer.close()

    return handle


async def _h2_request(port: int) -> tuple[str, Any]:
    """One GET over h2; returns ("status", code) or ("reset", error code)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    conn.send_headers(
        1, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "t")], True
    )
    writer.write(conn.data_to_send())
    try:
        async with asyncio.timeout(5):  # bounds the hang the bug causes
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        return "status", dict(event.headers)[b":status"]
                    if isinstance(event, h2.events.StreamReset):
                        return "reset", event.error_code
                writer.write(conn.data_to_send())
        return "closed", None
    finally:
        writer.close()


async def test_h2_upstream_with_a_non_numeric_status_is_a_bad_gateway(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    target = await tcp_server(_h2_backend([(":status", "abc")]))
    proxy = await start_proxy(target)
    outcome = await _h2_request(proxy.outbound_addr.port)  # TimeoutError: the stream hangs
    assert errors == []
    assert outcome in (("status", b"502"), ("reset", h2.errors.ErrorCodes.INTERNAL_ERROR))


def _h2_echo_backend(trailers: list[tuple[str, str]]) -> Callable[..., Awaitable[None]]:
    """An h2 server answering each request, once its body ended, with 200 and ``trailers``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.StreamEnded):
                    conn.send_headers(event.stream_id, [(":status", "200")])
                    conn.send_headers(event.stream_id, trailers, end_stream=True)
            writer.write(conn.data_to_send())
            await writer.drain()
        writer.close()

    return handle


@pytest.mark.parametrize(
    ("request_trailers", "response_trailers"),
    [
        ([("l5d-client-id", "forged")], [("grpc-status", "0")]),  # request side filtered away
        ([("x-checksum", "1")], [("l5d-proxy-error", "forged")]),  # response side filtered away
    ],
)
async def test_h2_trailers_that_filter_to_nothing_do_not_break_the_connection(
    start_proxy: StartProxy,
    tcp_server: TcpServer,
    request_trailers: list[tuple[str, str]],
    response_trailers: list[tuple[str, str]],
) -> None:
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    target = await tcp_server(_h2_echo_backend(response_trailers))
    proxy = await start_proxy(target)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    request = [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "t")]
    conn.send_headers(1, request)
    conn.send_data(1, b"body")
    conn.send_headers(1, request_trailers, end_stream=True)
    writer.write(conn.data_to_send())
    status, ended = None, False
    try:
        async with asyncio.timeout(5):  # bounds the hang the bug causes
            while not ended and (data := await reader.read(65536)):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers)[b":status"]
                    elif isinstance(event, h2.events.StreamEnded):
                        ended = True
                writer.write(conn.data_to_send())
    finally:
        writer.close()
    assert errors == []
    assert (status, ended) == (b"200", True)


@pytest.mark.parametrize("authority", ["svc.ns.svc.cluster.local:8²", "[::1]:8²", "h:²"])
def test_authorities_with_non_ascii_digits_have_no_port(authority: str) -> None:
    from gossamer_proxy.mesh.request import split_host_port
    from gossamer_proxy.outbound.policy_route_metrics import service_meta

    assert split_host_port(authority)[1] is None
    assert service_meta(authority) is None


@pytest.mark.parametrize(("name", "value"), [(b"l5d-retry-limit", "²"), (b"l5d-retry-http", "5²0")])
def test_l5d_directives_with_non_ascii_digits_are_refused(name: bytes, value: str) -> None:
    from gossamer_proxy.mesh.l5d_headers import OutboundDirectives, _apply_override

    with pytest.raises(ValueError, match="not a"):
        _apply_override(OutboundDirectives(), name, value)
