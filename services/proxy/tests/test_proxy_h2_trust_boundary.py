"""HTTP/2 trust boundary through a real proxy on loopback: authority and trailers (issue 16)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import h2.config
import h2.connection
import h2.events
import pytest
from gossamer_proxy.app import Proxy
from gossamer_proxy.http2.authority import AuthorityError, repeats_host, settle_authority

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]
Headers = list[tuple[bytes, bytes]]

pytestmark = pytest.mark.timeout(60)


def test_authority_wins_over_host() -> None:
    assert settle_authority([(b":authority", b"a"), (b"x", b"1")]) == (
        b"a",
        [(b":authority", b"a"), (b"x", b"1")],
    )
    authority, headers = settle_authority(
        [(b":authority", b"a"), (b"host", b"b"), (b"host", b"a"), (b"host", b"a")]
    )
    assert authority == b"a"
    assert headers == [(b":authority", b"a"), (b"host", b"a")]
    assert settle_authority([(b"host", b"h")]) == (b"h", [(b"host", b"h")])
    with pytest.raises(AuthorityError):
        settle_authority([(b"host", b"a"), (b"host", b"b")])


def test_two_host_fields_are_found_whatever_they_say() -> None:
    assert not repeats_host([(b":authority", b"a"), (b"host", b"a"), (b"x", b"host")])
    assert repeats_host([(b"host", b"a"), (b"x", b"1"), (b"host", b"a")])
    assert repeats_host([(b":authority", b"a"), (b"host", b"b"), (b"host", b"a")])


class _RecordingH2App:
    """An h2 app recording each stream's headers and trailers; answers with ``trailers``."""

    def __init__(self, trailers: Headers) -> None:
        self.trailers = trailers
        self.requests: list[Headers] = []
        self.request_trailers: list[Headers] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        self.requests.append(list(event.headers))
                    elif isinstance(event, h2.events.TrailersReceived):
                        self.request_trailers.append(list(event.headers))
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        conn.send_headers(event.stream_id, [(b":status", b"200")])
                        conn.send_data(event.stream_id, b"ok")
                        conn.send_headers(event.stream_id, self.trailers, end_stream=True)
                writer.write(conn.data_to_send())
                await writer.drain()
        finally:
            writer.close()


async def _h2_request(
    port: int, headers: Headers, trailers: Headers | None
) -> tuple[Headers | None, bool]:
    """Send one request; returns (response trailers, whether the proxy ended the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    conn.initiate_connection()
    conn.send_headers(1, headers, end_stream=trailers is None)
    if trailers is not None:
        conn.send_data(1, b"hi")
        conn.send_headers(1, trailers, end_stream=True)
    writer.write(conn.data_to_send())
    got: Headers | None = None
    try:
        async with asyncio.timeout(10):
            while True:
                data = await reader.read(65536)
                if not data:
                    return got, True
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.TrailersReceived):
                        got = list(event.headers)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        return got, True
                    elif isinstance(event, h2.events.StreamEnded):
                        return got, False
                writer.write(conn.data_to_send())
    finally:
        writer.close()


def _request(authority: bytes, *extra: tuple[bytes, bytes]) -> Headers:
    return [
        (b":method", b"POST"),
        (b":path", b"/x"),
        (b":scheme", b"http"),
        (b":authority", authority),
        *extra,
    ]


async def test_trailers_are_filtered_both_ways_inbound(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    app = _RecordingH2App(
        [(b"grpc-status", b"0"), (b"l5d-proxy-error", b"forged"), (b"host", b"evil")]
    )
    host, port = await tcp_server(app.handle)
    proxy = await start_proxy(GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"{host}:{port}")
    got, ended = await _h2_request(
        proxy.inbound_addr.port,
        _request(b"svc.example"),
        [
            (b"l5d-client-id", b"admin.ns.serviceaccount.identity.x.cluster.local"),
            (b"host", b"evil"),
            (b"content-length", b"9"),
            (b"x-sum", b"7"),
        ],
    )
    assert not ended
    assert app.request_trailers == [[(b"x-sum", b"7")]]
    assert got == [(b"grpc-status", b"0")]


async def test_host_disagreeing_with_authority_never_reaches_the_app(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    app = _RecordingH2App([(b"grpc-status", b"0")])
    host, port = await tcp_server(app.handle)
    proxy = await start_proxy((host, port))
    _, ended = await _h2_request(
        proxy.outbound_addr.port,
        _request(b"public.example", (b"host", b"admin.internal")),
        None,
    )
    assert ended
    _, ended = await _h2_request(
        proxy.outbound_addr.port,
        _request(b"public.example", (b"host", b"admin.internal"), (b"host", b"public.example")),
        None,
    )
    assert ended
    assert app.requests == []
    # Agreeing fields go through, as one authority.
    _, ended = await _h2_request(
        proxy.outbound_addr.port, _request(b"public.example", (b"host", b"public.example")), None
    )
    assert not ended
    hosts = [v for n, v in app.requests[0] if n in (b":authority", b"host")]
    assert hosts == [b"public.example", b"public.example"]
