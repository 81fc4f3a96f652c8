"""The request-observer seam (:mod:`gossamer_proxy.observe`) on real HTTP/1 and HTTP/2 paths."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
from gossamer_proxy.app import Proxy
from gossamer_proxy.observe import ObservedRequest, ObserverHub, Observers, RequestObserver

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]

pytestmark = pytest.mark.timeout(60)


class Recorder(RequestObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, ObservedRequest]] = []

    def on_request(self, request: ObservedRequest) -> object | None:
        self.events.append(("request", request))
        return True

    def on_forwarded(self, request: ObservedRequest, token: object) -> None:
        self.events.append(("forwarded", request))

    def on_response(self, request: ObservedRequest, token: object) -> None:
        self.events.append(("response", request))

    def on_end(self, request: ObservedRequest, token: object) -> None:
        self.events.append(("end", request))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


class Tagger(RequestObserver):
    """Adds a header to every request (as tracing adds ``traceparent``)."""

    def on_request(self, request: ObservedRequest) -> object | None:
        request.add_request_header(b"x-observed", request.method)
        return None


class Skipper(RequestObserver):
    def on_request(self, request: ObservedRequest) -> object | None:
        return None


def test_hub_compiles_per_direction_and_clears_when_empty() -> None:
    hub = ObserverHub()
    seen: dict[str, Observers | None] = {}
    hub.attach("inbound", lambda obs: seen.__setitem__("in", obs))
    hub.attach("outbound", lambda obs: seen.__setitem__("out", obs))
    assert seen == {"in": None, "out": None}
    recorder = Recorder()
    hub.add(recorder, ("outbound",))
    assert seen["in"] is None
    assert seen["out"] is not None
    hub.remove(recorder)
    assert seen == {"in": None, "out": None}


def test_request_nobody_wants_is_not_kept() -> None:
    from gossamer_proxy.observe import ConnectionFacts

    facts = ConnectionFacts("inbound", ("10.0.0.1", 5000), ("10.0.0.2", 80), None)
    observed = Observers((Skipper(),)).begin_h2(
        facts, 1, [(b":method", b"GET"), (b":path", b"/x")], 0.0
    )
    assert observed is None


_HEADS: list[bytes] = []


async def _http1_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    _HEADS.append(await reader.readuntil(b"\r\n\r\n"))
    writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nhello")
    await writer.drain()
    writer.close()


async def test_http1_request_reports_each_moment_once(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    host, port = await tcp_server(_http1_app)
    proxy = await start_proxy((host, port))
    recorder = Recorder()
    proxy.observers.add(recorder, ("outbound",))
    proxy.observers.add(Tagger(), ("outbound",))
    _HEADS.clear()
    url = f"http://127.0.0.1:{proxy.outbound_addr.port}/books?x=1"
    async with httpx.AsyncClient() as client:
        rsp = await client.get(url, headers={"host": "web.demo:8080"})
    assert rsp.status_code == 201
    assert recorder.kinds() == ["request", "forwarded", "response", "end"]
    assert b"\r\nx-observed: GET\r\n" in _HEADS[0]
    req = recorder.events[0][1]
    assert (req.direction, req.method, req.path, req.authority) == (
        "outbound",
        b"GET",
        b"/books?x=1",
        b"web.demo:8080",
    )
    assert req.source is not None
    assert req.source[0] == "127.0.0.1"
    assert req.dst_addr == (host, port)
    assert (req.status, req.response_bytes, req.content_length) == (201, 5, 5)
    assert req.stream_id == 1
    assert req.started_at <= (req.forwarded_at or 0) <= (req.response_at or 0)
    assert req.error is None


async def test_proxy_made_response_is_observed_and_removal_stops_reports(
    start_proxy: StartProxy,
) -> None:
    proxy = await start_proxy(("127.0.0.1", 9))  # nothing listens: the proxy answers 502
    recorder = Recorder()
    proxy.observers.add(recorder, ("outbound",))
    url = f"http://127.0.0.1:{proxy.outbound_addr.port}/x"
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).status_code == 502
        assert recorder.kinds() == ["request", "response", "end"]
        req = recorder.events[0][1]
        assert (req.status, req.error) == (502, "CONNECT_REFUSED")
        proxy.observers.remove(recorder)
        assert all(ctx.observers is None for ctx in proxy.contexts)
        assert (await client.get(url)).status_code == 502
    assert len(recorder.events) == 3


async def test_http2_grpc_stream_reports_status_and_bytes(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    seen.extend(event.headers)
                if isinstance(event, h2.events.StreamEnded):
                    sid = event.stream_id
                    conn.send_headers(
                        sid, [(b":status", b"200"), (b"content-type", b"application/grpc")]
                    )
                    conn.send_data(sid, b"\x00\x00\x00\x00\x02hi")
                    conn.send_headers(sid, [(b"grpc-status", b"7")], end_stream=True)
            writer.write(conn.data_to_send())
            await writer.drain()
        writer.close()

    host, port = await tcp_server(app)
    proxy = await start_proxy(GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"{host}:{port}")
    recorder = Recorder()
    proxy.observers.add(recorder, ("inbound",))
    proxy.observers.add(Tagger(), ("inbound",))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.inbound_addr.port)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    conn.send_headers(
        1,
        [(b":method", b"POST"), (b":path", b"/pkg.Svc/Call"), (b":scheme", b"http"),
         (b":authority", b"svc:9000"), (b"content-type", b"application/grpc")],
        end_stream=True,
    )  # fmt: skip
    writer.write(conn.data_to_send())
    done = False
    async with asyncio.timeout(10):
        while not done:
            data = await reader.read(65536)
            assert data
            for event in conn.receive_data(data):
                done = done or isinstance(event, h2.events.StreamEnded)
            writer.write(conn.data_to_send())
    writer.close()
    assert recorder.kinds() == ["request", "forwarded", "response", "end"]
    req = recorder.events[0][1]
    assert (req.direction, req.method, req.path, req.authority, req.version) == (
        "inbound",
        b"POST",
        b"/pkg.Svc/Call",
        b"svc:9000",
        "HTTP/2.0",
    )
    assert (req.stream_id, req.status, req.grpc_status, req.response_bytes) == (1, 200, 7, 7)
    assert req.reset_code is None
    assert (b"x-observed", b"POST") in seen
