"""What the HTTP/2 path keeps: of DATA waiting for a window, about its size in bytes; once a
stream or a connection is over, nothing.

Of a stream, nothing once it closed; of a connection, nothing: it is freed
by reference counting when it closes, not left for a full garbage collection. The codec
tests drive two connections against each other in memory; the proxy tests send streams
through a real proxy on loopback and look at what its connections remember.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tracemalloc
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
import hyperframe.frame
import pytest
from gossamer_proxy.app import Proxy
from gossamer_proxy.errors import ProxyError, ProxyErrorKind
from gossamer_proxy.h2codec import new_connection
from gossamer_proxy.http2.bridge import H2Server, _config, _set_windows
from raw_h2 import REQUEST, CountingH2Backend, RawH2Client, outbound_context, until

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]

pytestmark = pytest.mark.timeout(60)

GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"app")]


Codec = Any  # gossamer_proxy's jh2 connections (typed as h2's)


def _connected_pair() -> tuple[Codec, Codec]:
    client = new_connection(_config(client_side=True))
    server = new_connection(_config(client_side=False))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


def _exchange(client: Codec, server: Codec, streams: int) -> None:
    """``streams`` requests answered in full, one after another (each new stream cleans up)."""
    for _ in range(streams):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, GET, end_stream=True)
        server.receive_data(client.data_to_send())
        server.send_headers(sid, [(b":status", b"200")])
        server.send_data(sid, b"ok", end_stream=True)
        client.receive_data(server.data_to_send())
        server.receive_data(client.data_to_send())


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_completed_streams_leave_nothing_behind() -> None:
    client, server = _connected_pair()
    _exchange(client, server, 10)  # every lazily built part of the codec exists now
    tracemalloc.start()
    try:
        before = _traced()
        _exchange(client, server, 3000)
        grown = _traced() - before
    finally:
        tracemalloc.stop()
    # h2 itself keeps ~120 bytes per closed stream and side (720 kB here), for 65,536 streams.
    assert grown < 64 * 1024, grown


def test_a_connections_codec_state_is_small_and_settings_still_apply() -> None:
    _connected_pair()  # every lazily built part of the codec exists now
    tracemalloc.start()
    try:
        before = _traced()
        pairs = [_connected_pair() for _ in range(50)]
        for client, server in pairs:
            _set_windows(server)  # a SETTINGS change that the client acknowledges
            client.receive_data(server.data_to_send())
            server.receive_data(client.data_to_send())
        per_pair = (_traced() - before) / len(pairs)
    finally:
        tracemalloc.stop()
    client, server = pairs[0]
    assert client.remote_settings.initial_window_size == 1 << 20
    assert server.local_settings.initial_window_size == 1 << 20
    _exchange(client, server, 1)
    # h2's settings alone were ~15 kB a pair (ten ~760-byte deques a connection).
    assert per_pair < 14 * 1024, per_pair


def _late_trailers(stream_id: int) -> bytes:
    frame = hyperframe.frame.HeadersFrame(stream_id)
    # Never indexed, so the server's HPACK table stays in step with the client's encoder.
    frame.data = hpack.Encoder().encode([(b"grpc-status", b"0", True)])
    frame.flags.add("END_HEADERS")
    frame.flags.add("END_STREAM")
    return bytes(frame.serialize())


def test_a_reset_stream_is_remembered_so_late_frames_get_a_stream_error() -> None:
    client, server = _connected_pair()
    client.send_headers(1, GET, end_stream=True)
    server.receive_data(client.data_to_send())
    server.reset_stream(1, 8)
    server.data_to_send()
    _exchange(client, server, 5)  # later streams: stream 1 is cleaned up meanwhile
    # Trailers the client sent before it saw the RST_STREAM: answered on that stream only.
    server.receive_data(_late_trailers(1))
    answer = server.data_to_send()
    assert answer[3] == 0x3  # RST_STREAM
    assert int.from_bytes(answer[5:9], "big") == 1
    _exchange(client, server, 1)  # the connection still serves


def test_nothing_is_recorded_of_reset_streams_yet_the_oldest_is_still_answered() -> None:
    client, server = _connected_pair()
    for _ in range(2000):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, GET, end_stream=True)
        server.receive_data(client.data_to_send())
        server.reset_stream(sid, 8)
        client.receive_data(server.data_to_send())
    _exchange(client, server, 1)
    assert len(server._closed_streams) == 0
    # Even the first reset stream is answered with RST_STREAM, not a connection error.
    server.receive_data(_late_trailers(1))
    answer = server.data_to_send()
    assert answer[3] == 0x3
    assert int.from_bytes(answer[5:9], "big") == 1
    _exchange(client, server, 1)


async def test_the_proxy_forgets_streams_that_ended(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    backend = CountingH2Backend()
    proxy = await start_proxy(await tcp_server(backend.handle))
    client = await RawH2Client.connect(proxy.outbound_addr.port)
    ctx = outbound_context(proxy)
    try:
        for _ in range(20):
            sids = []
            for _ in range(20):
                sid = client.conn.get_next_available_stream_id()
                client.conn.send_headers(sid, REQUEST, end_stream=True)
                sids.append(sid)
            await client.send(client.conn.data_to_send())

            def answered(sids: list[int] = sids) -> bool:
                return all(s in client.responses for s in sids)

            await until(answered, "the answers")
        server = next(c for c in ctx.connections if isinstance(c, H2Server))
        upstream = server.upstream
        assert upstream is not None
        assert backend.streams == 400
        assert len(server.conn._closed_streams) == 0
        assert len(upstream.conn._closed_streams) == 0
    finally:
        client.close()


async def test_closed_connections_are_freed_without_a_garbage_collection(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    backend = CountingH2Backend()
    proxy = await start_proxy(await tcp_server(backend.handle))
    ctx = outbound_context(proxy)
    gc.collect()
    gc.disable()  # the proxy's collector thresholds make full collections rare
    try:
        client = await RawH2Client.connect(proxy.outbound_addr.port)
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, REQUEST, end_stream=True)
        await client.send(client.conn.data_to_send())
        await until(lambda: sid in client.responses, "the answer")
        server = next(c for c in ctx.connections if isinstance(c, H2Server))
        assert server.upstream is not None
        codecs = [weakref.ref(server.conn), weakref.ref(server.upstream.conn)]
        del server
        client.close()
        await until(lambda: not ctx.connections, "the proxy to see the client go")
        await until(lambda: all(ref() is None for ref in codecs), "both codecs to be freed")
    finally:
        gc.enable()


class _BodyBackend:
    """An h2 server that answers each request once its body ended, keeping the bodies."""

    def __init__(self) -> None:
        self.bodies: dict[int, bytes] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        received: dict[int, bytearray] = {}
        with contextlib.suppress(ConnectionError, h2.exceptions.ProtocolError):
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        received.setdefault(event.stream_id, bytearray()).extend(event.data)
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        self.bodies[event.stream_id] = bytes(received.pop(event.stream_id, b""))
                        conn.send_headers(event.stream_id, [(":status", "200")], end_stream=True)
                writer.write(conn.data_to_send())
                await writer.drain()
        writer.close()


async def test_tiny_data_frames_queue_about_their_bytes_not_a_tuple_each(
    start_proxy: StartProxy, tcp_server: TcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DATA that waits (here for the upstream connect) is kept in few chunks, and arrives."""
    backend = _BodyBackend()
    proxy = await start_proxy(await tcp_server(backend.handle))
    connector = outbound_context(proxy).connector
    original = connector.open
    release = asyncio.Event()

    async def gated_open(*args: Any, **kwargs: Any) -> Any:
        await release.wait()  # the stream waits for its connection while the frames arrive
        return await original(*args, **kwargs)

    monkeypatch.setattr(connector, "open", gated_open)
    client = await RawH2Client.connect(proxy.outbound_addr.port)
    try:
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, [(":method", "POST"), *REQUEST[1:]])
        await client.send(client.conn.data_to_send())
        server = await _server_of(proxy)
        await until(lambda: sid in server.pairs, "the stream")
        pair = server.pairs[sid]
        body = bytes(range(256)) * 100  # 25,600 one-byte DATA frames
        for start in range(0, len(body), 1000):
            for i in range(start, min(start + 1000, len(body))):
                client.conn.send_data(sid, body[i : i + 1])
            await client.send(client.conn.data_to_send())
        await until(lambda: sum(len(d) for d, _ in pair.to_up.pending) == len(body), "the body")
        assert len(pair.to_up.pending) <= 2  # a tuple per frame: 25,600
        release.set()
        client.conn.end_stream(sid)
        await client.send(client.conn.data_to_send())
        await until(lambda: sid in client.responses, "the response")
    finally:
        client.close()
    assert client.responses[sid] == 200
    assert list(backend.bodies.values()) == [body]


async def _server_of(proxy: Proxy) -> H2Server:
    ctx = outbound_context(proxy)
    await until(lambda: any(isinstance(c, H2Server) for c in ctx.connections), "the h2 server")
    return next(c for c in ctx.connections if isinstance(c, H2Server))


async def test_a_client_gone_before_its_answers_leaves_no_connection_behind(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    """GOAWAY and FIN with streams in flight (what h2load does when its time is up): once
    the answers find the client gone, the connection and its upstream close, not after the
    idle timeout."""
    release = asyncio.Event()
    upstreams: list[asyncio.StreamWriter] = []

    async def late_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstreams.append(writer)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        waiting: list[int] = []
        with contextlib.suppress(ConnectionError, h2.exceptions.ProtocolError):
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        waiting.append(event.stream_id)
                writer.write(conn.data_to_send())
                if len(waiting) == 3:
                    await release.wait()
                    for sid in waiting:
                        conn.send_headers(sid, [(":status", "200")])
                        conn.send_data(sid, b"late", end_stream=True)
                    waiting.clear()
                    writer.write(conn.data_to_send())

    proxy = await start_proxy(await tcp_server(late_backend))
    ctx = outbound_context(proxy)
    client = await RawH2Client.connect(proxy.outbound_addr.port)
    try:
        for _ in range(3):
            sid = client.conn.get_next_available_stream_id()
            client.conn.send_headers(sid, REQUEST, end_stream=True)
        await client.send(client.conn.data_to_send())
        server = await _server_of(proxy)
        await until(lambda: len(server.pairs) == 3 and bool(upstreams), "the streams upstream")
        up = server.upstream
        assert up is not None
        client.conn.close_connection()
        await client.send(client.conn.data_to_send())
        client.writer.write_eof()
        await until(lambda: server._goaway, "the proxy to see the client go")
        release.set()
        await until(lambda: client.closed, "the proxy to close the client connection")
        await until(lambda: not ctx.connections, "the proxy to forget the connection")
        await until(lambda: up._closed, "the upstream connection to close")
    finally:
        client.close()


class _LoopTransport:
    """What uvloop leaves after a connect cancelled once the connection was made: a closed
    transport that still holds its protocol, and never reports the loss."""

    def __init__(self, protocol: object) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


async def test_a_connect_that_fails_after_the_connection_was_made_leaves_nothing_behind(
    start_proxy: StartProxy, tcp_server: TcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = CountingH2Backend()
    proxy = await start_proxy(await tcp_server(backend.handle))
    connector = outbound_context(proxy).connector
    made: list[weakref.ref[Any]] = []

    async def made_then_timed_out(endpoint: Any, factory: Callable[[], Any], **_: Any) -> Any:
        protocol = factory()
        protocol.connection_made(_LoopTransport(protocol))
        made.append(weakref.ref(protocol))
        raise ProxyError(ProxyErrorKind.CONNECT_TIMEOUT, str(endpoint))

    monkeypatch.setattr(connector, "open", made_then_timed_out)
    gc.collect()
    gc.disable()  # the proxy's collector thresholds make full collections rare
    try:
        client = await RawH2Client.connect(proxy.outbound_addr.port)
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, REQUEST, end_stream=True)
        await client.send(client.conn.data_to_send())
        await until(lambda: sid in client.responses, "the answer")
        assert client.responses[sid] == 504
        assert made
        assert made[0]() is None
        client.close()
    finally:
        gc.enable()


async def test_a_failing_codec_release_does_not_skip_the_connections_cleanup(
    start_proxy: StartProxy, tcp_server: TcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = CountingH2Backend()
    proxy = await start_proxy(await tcp_server(backend.handle))
    ctx = outbound_context(proxy)
    released: list[object] = []

    def renamed_internal(conn: object) -> None:
        released.append(conn)
        raise AttributeError("'H2Connection' object has no attribute '_frame_dispatch_table'")

    monkeypatch.setattr("gossamer_proxy.http2.bridge.release", renamed_internal)
    client = await RawH2Client.connect(proxy.outbound_addr.port)
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, REQUEST, end_stream=False)  # a stream still in flight
    await client.send(client.conn.data_to_send())
    await until(lambda: backend.streams == 1, "the stream to reach the backend")
    server = next(c for c in ctx.connections if isinstance(c, H2Server))
    client.close()
    await until(lambda: server.conn in released, "the proxy to see the client go")
    assert server not in ctx.connections
    assert not server.pairs
