"""A Linkerd client proxy's upgraded HTTP/1 (``l5d-orig-proto``) reaches an HTTP/1.1 app intact.

Linkerd's outbound proxy, told by the destination that an endpoint is meshed (the ``h2``
hint), upgrades the app's HTTP/1 requests to HTTP/2 and marks them ``l5d-orig-proto``; in
transport-header mode it connects to the inbound port over mTLS with ALPN
``transport.l5d.io/v1`` and a header saying HTTP/2. The test client below speaks exactly that
wire form (and plain HTTP/2 over mTLS) against a real inbound proxy on loopback. The app
speaks HTTP/1.1 and, to show that unmarked streams stay HTTP/2, HTTP/2 as well when it sees
the HTTP/2 preface.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
from gossamer_api.transport_header import (
    ALPN_PROTOCOL,
    SessionProtocol,
    TransportHeader,
    encode_transport_header,
)
from gossamer_proxy.app import Proxy
from gossamer_tls import TrustMaterial
from test_proxy_http1_upstream_limits import EndlessUpstream, endless
from test_proxy_mesh_two_hop import CLIENT, SERVER, _identity_env, trust  # noqa: F401

StartProxy = Callable[..., Awaitable[Proxy]]
Backend = Callable[..., Awaitable[tuple[str, int]]]
Headers = list[tuple[bytes, bytes]]


@dataclass
class AppRequest:
    line: bytes
    headers: Headers
    body: bytes


@dataclass
class App:
    """What the app saw: HTTP/1 requests, and how many HTTP/2 connections and streams."""

    http1: list[AppRequest] = field(default_factory=list)
    h2_streams: list[Headers] = field(default_factory=list)


async def _read_http1_body(reader: asyncio.StreamReader, headers: Headers) -> bytes:
    fields = {n.lower(): v for n, v in headers}
    if b"content-length" in fields:
        return await reader.readexactly(int(fields[b"content-length"]))
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = b""
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                return body
            body += await reader.readexactly(size)
            await reader.readline()
    return b""


async def _serve_http1(
    app: App, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    pending = first
    while True:
        head = pending + await reader.readuntil(b"\r\n\r\n")
        pending = b""
        lines = head.split(b"\r\n")
        headers = [
            (n.strip(), v.strip())
            for n, _, v in (line.partition(b":") for line in lines[1:] if line)
        ]
        if lines[0].startswith(b"POST /early "):
            # Answer before reading the body, then close: the rest is not wanted.
            app.http1.append(AppRequest(lines[0], headers, b""))
            writer.write(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            return
        body = await _read_http1_body(reader, headers)
        app.http1.append(AppRequest(lines[0], headers, body))
        method, path = lines[0].split(b" ")[:2]
        if path == b"/big":
            # More than the client's windows: the proxy must pace it, not buffer it all.
            size = 3 * 1024 * 1024 + 7
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for offset in range(0, size, 65536):
                piece = b"b" * min(65536, size - offset)
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            pending = await reader.read(1)
            if not pending:
                return
            continue
        if path == b"/trailers":
            writer.write(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n"
                b"4\r\nbody\r\n0\r\nx-checksum: abc\r\nl5d-client-id: forged\r\n\r\n"
            )
            await writer.drain()
            pending = await reader.read(1)
            if not pending:
                return
            continue
        if method == b"HEAD":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")
            await writer.drain()
            pending = await reader.read(1)
            if not pending:
                return
            continue
        if path == b"/close":
            # Close-delimited: no length, the body ends with the connection.
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\nx-app: h1\r\n\r\nbye")
            await writer.drain()
            return
        answer = b"you sent " + body
        writer.write(
            b"HTTP/1.1 201 Created\r\nX-App: h1\r\ncontent-length: %d\r\n\r\n%s"
            % (len(answer), answer)
        )
        await writer.drain()
        if reader.at_eof():
            return
        pending = await reader.read(1)
        if not pending:
            return


async def _serve_h2(
    app: App, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    conn.initiate_connection()
    data = first
    while True:
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                app.h2_streams.append(list(event.headers))
                conn.send_headers(
                    event.stream_id, [(b":status", b"200"), (b"x-app", b"h2")], end_stream=False
                )
                conn.send_data(event.stream_id, b"h2 answer", end_stream=True)
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        writer.write(conn.data_to_send())
        await writer.drain()
        data = await reader.read(65536)
        if not data:
            return


async def _start_app(tcp_server: Backend, app: App) -> tuple[str, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.readexactly(3)
            if first == b"PRI":
                await _serve_h2(app, first, reader, writer)
            else:
                await _serve_http1(app, first, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await tcp_server(handle)


@dataclass
class Response:
    headers: dict[bytes, bytes]
    body: bytes
    trailers: dict[bytes, bytes] = field(default_factory=dict)


class LinkerdStyleClient:
    """An HTTP/2 client over mesh mTLS, as a Linkerd outbound proxy talks to a meshed peer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.initiate_connection()
        self.writer.write(self.conn.data_to_send())

    @classmethod
    async def connect(
        cls,
        addr: tuple[str, int],
        identity_env: dict[str, str],
        *,
        transport_port: int | None,
    ) -> LinkerdStyleClient:
        context = ssl.create_default_context(
            cadata=identity_env["LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"]
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(
            identity_env["GOSSAMER_PROXY_IDENTITY_CERT_FILE"],
            identity_env["GOSSAMER_PROXY_IDENTITY_KEY_FILE"],
        )
        if transport_port is not None:
            context.set_alpn_protocols([ALPN_PROTOCOL])
        reader, writer = await asyncio.open_connection(
            addr[0], addr[1], ssl=context, server_hostname=SERVER
        )
        if transport_port is not None:
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == ALPN_PROTOCOL
            header = TransportHeader(port=transport_port, session_protocol=SessionProtocol.HTTP2)
            writer.write(encode_transport_header(header))
        return cls(reader, writer)

    async def request(self, headers: Headers, body: bytes = b"") -> Response:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, headers, end_stream=not body)
        response: dict[bytes, bytes] = {}
        trailers: dict[bytes, bytes] = {}
        received = b""
        while True:
            while body:  # within the proxy's flow-control windows
                window = min(
                    self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size
                )
                if window <= 0:
                    break
                piece, body = body[:window], body[window:]
                self.conn.send_data(sid, piece, end_stream=not body)
            self.writer.write(self.conn.data_to_send())
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            assert data, "the proxy closed the connection"
            for event in self.conn.receive_data(data):
                if getattr(event, "stream_id", None) != sid:
                    continue
                if isinstance(event, h2.events.ResponseReceived):
                    response = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    received += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, h2.events.TrailersReceived):
                    trailers = dict(event.headers)
                elif isinstance(event, h2.events.StreamReset):
                    raise AssertionError(f"stream reset: {event.error_code}")
                elif isinstance(event, h2.events.StreamEnded):
                    self.writer.write(self.conn.data_to_send())
                    return Response(response, received, trailers)
            self.writer.write(self.conn.data_to_send())

    async def request_many(self, requests: list[Headers]) -> dict[int, Response]:
        """Send every request (no bodies) at once; the responses by stream id."""
        sids = []
        for headers in requests:
            sid = self.conn.get_next_available_stream_id()
            self.conn.send_headers(sid, headers, end_stream=True)
            sids.append(sid)
        self.writer.write(self.conn.data_to_send())
        heads: dict[int, dict[bytes, bytes]] = {}
        bodies: dict[int, bytes] = dict.fromkeys(sids, b"")
        done: dict[int, Response] = {}
        while len(done) < len(sids):
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            assert data, "the proxy closed the connection"
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    heads[event.stream_id] = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] += event.data
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                elif isinstance(event, h2.events.StreamEnded):
                    sid = event.stream_id
                    done[sid] = Response(heads[sid], bodies[sid])
            self.writer.write(self.conn.data_to_send())
        return done

    def close(self) -> None:
        self.writer.close()


def _request(
    method: bytes, path: bytes, *extra: tuple[bytes, bytes], orig: bytes | None = b"HTTP/1.1"
) -> Headers:
    headers = [
        (b":method", method),
        (b":scheme", b"http"),
        (b":authority", b"api.emojivoto.svc.cluster.local:8080"),
        (b":path", path),
        *extra,
    ]
    if orig is not None:
        headers.append((b"l5d-orig-proto", orig))
    return headers


def _fields(request: AppRequest) -> dict[bytes, bytes]:
    return {n.lower(): v for n, v in request.headers}


@pytest.mark.parametrize("transport_header", [True, False], ids=["transport-header", "plain-h2"])
async def test_upgraded_http1_reaches_an_http1_app_intact(
    start_proxy: StartProxy,
    tcp_server: Backend,
    trust: TrustMaterial,  # noqa: F811
    tmp_path: Path,
    transport_header: bool,
) -> None:
    app = App()
    app_addr = await _start_app(tcp_server, app)
    # With a transport header the header names the app's port; plain HTTP/2 over mTLS has no
    # iptables redirect on loopback, so the app's address is given instead.
    routing = (
        {}
        if transport_header
        else {"GOSSAMER_PROXY_INBOUND_FIXED_TARGET": f"{app_addr[0]}:{app_addr[1]}"}
    )
    inbound = await start_proxy(**_identity_env(trust, tmp_path, SERVER), **routing)
    client = await LinkerdStyleClient.connect(
        (inbound.inbound_addr.host, inbound.inbound_addr.port),
        _identity_env(trust, tmp_path, CLIENT),
        transport_port=app_addr[1] if transport_header else None,
    )
    try:
        got = await client.request(_request(b"GET", b"/hello?x=1", (b"x-trace", b"abc")))
        assert got.headers[b":status"] == b"201"
        assert got.headers[b"x-app"] == b"h1"
        assert got.headers[b"l5d-orig-proto"] == b"HTTP/1.1"
        assert got.headers[b"content-length"] == b"9"
        assert got.body == b"you sent "

        # A body with a length, and one without (sent chunked to the app).
        sized = await client.request(
            _request(b"POST", b"/sized", (b"content-length", b"5")), b"12345"
        )
        assert sized.body == b"you sent 12345"
        streamed = await client.request(_request(b"POST", b"/streamed"), b"x" * 70000)
        assert streamed.body == b"you sent " + b"x" * 70000

        # HTTP/1.0 and absolute-form, as Linkerd marks them.
        await client.request(_request(b"GET", b"/old", orig=b"HTTP/1.0"))
        await client.request(_request(b"GET", b"/abs", orig=b"HTTP/1.1; absolute-form"))

        # Connection: close from the app, with a close-delimited body.
        closed = await client.request(_request(b"GET", b"/close"))
        assert closed.headers[b":status"] == b"200"
        assert closed.body == b"bye"
        assert b"connection" not in closed.headers
        assert closed.headers[b"l5d-orig-proto"] == b"HTTP/1.1"

        # Unmarked streams on the same connection stay HTTP/2 to the app.
        native = await client.request(_request(b"GET", b"/native", orig=None))
        assert (native.headers[b"x-app"], native.body) == (b"h2", b"h2 answer")
        assert b"l5d-orig-proto" not in native.headers

        after = await client.request(_request(b"GET", b"/after"))
        assert after.body == b"you sent "

        head = await client.request(_request(b"HEAD", b"/head"))
        assert (head.headers[b"content-length"], head.body) == (b"1234", b"")
        with_trailers = await client.request(_request(b"GET", b"/trailers"))
        assert with_trailers.body == b"body"
        assert with_trailers.trailers == {b"x-checksum": b"abc"}  # l5d-* never from a trailer
        big = await client.request(_request(b"GET", b"/big"))
        assert big.body == b"b" * (3 * 1024 * 1024 + 7)
        assert b"transfer-encoding" not in big.headers
    finally:
        client.close()

    lines = [r.line for r in app.http1]
    assert lines == [
        b"GET /hello?x=1 HTTP/1.1",
        b"POST /sized HTTP/1.1",
        b"POST /streamed HTTP/1.1",
        b"GET /old HTTP/1.1",
        b"GET http://api.emojivoto.svc.cluster.local:8080/abs HTTP/1.1",
        b"GET /close HTTP/1.1",
        b"GET /after HTTP/1.1",
        b"HEAD /head HTTP/1.1",
        b"GET /trailers HTTP/1.1",
        b"GET /big HTTP/1.1",
    ]
    first = _fields(app.http1[0])
    assert first[b"host"] == b"api.emojivoto.svc.cluster.local:8080"
    assert first[b"x-trace"] == b"abc"
    assert first[b"l5d-client-id"] == CLIENT.encode()
    assert all(b"l5d-orig-proto" not in _fields(r) for r in app.http1)
    assert all(not n.startswith(b":") for r in app.http1 for n, _ in r.headers)
    assert _fields(app.http1[1])[b"content-length"] == b"5"
    assert _fields(app.http1[2])[b"transfer-encoding"] == b"chunked"
    assert app.http1[2].body == b"x" * 70000
    assert len(app.h2_streams) == 1
    assert dict(app.h2_streams[0])[b":path"] == b"/native"


async def test_unknown_orig_proto_stays_http2(
    start_proxy: StartProxy,
    tcp_server: Backend,
    trust: TrustMaterial,  # noqa: F811
    tmp_path: Path,
) -> None:
    app = App()
    app_addr = await _start_app(tcp_server, app)
    inbound = await start_proxy(
        **_identity_env(trust, tmp_path, SERVER),
        GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"{app_addr[0]}:{app_addr[1]}",
    )
    client = await LinkerdStyleClient.connect(
        (inbound.inbound_addr.host, inbound.inbound_addr.port),
        _identity_env(trust, tmp_path, CLIENT),
        transport_port=None,
    )
    try:
        got = await client.request(_request(b"GET", b"/x", orig=b"HTTP/3"))
    finally:
        client.close()
    assert got.body == b"h2 answer"
    assert not app.http1
    assert b"l5d-orig-proto" not in dict(app.h2_streams[0])


async def test_concurrent_downgraded_streams_on_one_connection(
    start_proxy: StartProxy,
    tcp_server: Backend,
    trust: TrustMaterial,  # noqa: F811
    tmp_path: Path,
) -> None:
    app = App()
    app_addr = await _start_app(tcp_server, app)
    inbound = await start_proxy(**_identity_env(trust, tmp_path, SERVER))
    client = await LinkerdStyleClient.connect(
        (inbound.inbound_addr.host, inbound.inbound_addr.port),
        _identity_env(trust, tmp_path, CLIENT),
        transport_port=app_addr[1],
    )
    try:
        paths = [f"/r{i}".encode() for i in range(8)]
        native = _request(b"GET", b"/native", orig=None)
        responses = await client.request_many(
            [_request(b"GET", p) for p in paths[:4]]
            + [native]
            + [_request(b"GET", p) for p in paths[4:]]
        )
    finally:
        client.close()
    assert len(responses) == 9
    bodies = sorted(r.body for r in responses.values())
    assert bodies == sorted([b"you sent "] * 8 + [b"h2 answer"])
    assert sorted(r.line.split(b" ")[1] for r in app.http1) == sorted(paths)
    assert [dict(h)[b":path"] for h in app.h2_streams] == [b"/native"]


async def test_an_early_answer_ends_the_stream_and_the_connection_carries_on(
    start_proxy: StartProxy,
    tcp_server: Backend,
    trust: TrustMaterial,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The app answers before the request body ends: the client gets the answer, its stream
    is reset with NO_ERROR (the rest is not wanted), and the connection stays usable."""
    app = App()
    app_addr = await _start_app(tcp_server, app)
    inbound = await start_proxy(**_identity_env(trust, tmp_path, SERVER))
    client = await LinkerdStyleClient.connect(
        (inbound.inbound_addr.host, inbound.inbound_addr.port),
        _identity_env(trust, tmp_path, CLIENT),
        transport_port=app_addr[1],
    )
    conn = client.conn
    try:
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, _request(b"POST", b"/early"), end_stream=False)
        conn.send_data(sid, b"partial", end_stream=False)
        client.writer.write(conn.data_to_send())
        status = b""
        ended = reset = False
        while not (ended and reset):
            data = await asyncio.wait_for(client.reader.read(65536), 10)
            assert data
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
                elif isinstance(event, h2.events.StreamReset):
                    assert event.error_code == 0
                    reset = True
            client.writer.write(conn.data_to_send())
        assert status == b"413"
        after = await client.request(_request(b"GET", b"/after"))
        assert after.body == b"you sent "
    finally:
        client.close()


async def test_a_downgraded_stream_refuses_an_app_head_that_never_ends(
    start_proxy: StartProxy,
    tcp_server: Backend,
    trust: TrustMaterial,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The HTTP/1 app's response head never ends: the stream gets the proxy's 502 naming the
    limit, and the proxy hangs up on the app long before the app has written everything."""
    upstream = EndlessUpstream(b"HTTP/1.1 200 OK\r\nX-Long: ", endless(b"a" * 8192))
    app_addr = await tcp_server(upstream)
    inbound = await start_proxy(**_identity_env(trust, tmp_path, SERVER))
    client = await LinkerdStyleClient.connect(
        (inbound.inbound_addr.host, inbound.inbound_addr.port),
        _identity_env(trust, tmp_path, CLIENT),
        transport_port=app_addr[1],
    )
    try:
        got = await client.request(_request(b"GET", b"/endless"))
        await asyncio.wait_for(upstream.done.wait(), 30)
    finally:
        client.close()
    assert got.headers[b":status"] == b"502"
    assert got.headers[b"l5d-proxy-error"] == (
        b"invalid HTTP response from server: response head over 65536 bytes"
    )
    assert not upstream.reached_cap, f"the proxy read {upstream.written} bytes of one head"
