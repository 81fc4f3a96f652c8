"""The lean gRPC server: framing, flow control, slow readers, resets, deadlines, shutdown.

A raw HTTP/2 client (``h2``) controls the flow-control windows that a gRPC client would
manage by itself, so a reader that does not read can be played exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
from gossamer_api.proxy import destination_pb2, destination_pb2_grpc
from gossamer_common.grpc_http2 import (
    RequestBody,
    RequestError,
    Status,
    data_frames,
    parse_timeout,
    status_trailers,
)
from gossamer_destination import testing as t
from gossamer_destination.app import DestinationApp
from gossamer_destination.grpc_server import MAX_BUFFERED_REQUEST_BYTES, GrpcConnection, GrpcServer
from gossamer_destination.settings import DestinationSettings
from gossamer_destination.testing import MemorySource, memory_sources
from gossamer_destination.wire import ip_from_proto

TIMEOUT = 5.0
GET = b"/io.linkerd.proxy.destination.Destination/Get"
PATH = "web.ns.svc.cluster.local:80"


# -- sans-io -------------------------------------------------------------------------------------


def test_data_frames_split_at_the_peer_frame_size_and_share_the_payload() -> None:
    payload = bytes(range(256)) * 100  # 25,600 bytes
    frames = data_frames(3, payload, 16384)
    assert len(frames) == 4
    assert bytes(frames[0]) == b"\x00\x40\x00\x00\x00\x00\x00\x00\x03"
    assert bytes(frames[2])[:3] == (25600 - 16384).to_bytes(3, "big")
    assert b"".join(bytes(f) for f in frames[1::2]) == payload
    small = data_frames(1, b"abc", 16384)
    assert small[1] == b"abc"


def test_grpc_timeout_units_and_malformed_values() -> None:
    assert parse_timeout(b"5S") == 5.0
    assert parse_timeout(b"250m") == pytest.approx(0.25)
    assert parse_timeout(b"2H") == 7200.0
    for bad in (b"", b"5", b"123456789S", b"1s", b"-1S"):
        with pytest.raises(RequestError):
            parse_timeout(bad)


def test_request_body_is_one_bounded_uncompressed_message() -> None:
    body = RequestBody(limit=10)
    body.feed(b"\x00\x00\x00\x00\x03abc")
    assert body.message() == b"abc"
    too_big = RequestBody(limit=10)
    with pytest.raises(RequestError) as err:
        too_big.feed(b"\x00" * 16)
    assert err.value.status == Status.RESOURCE_EXHAUSTED
    compressed = RequestBody()
    compressed.feed(b"\x01\x00\x00\x00\x01a")
    with pytest.raises(RequestError) as err:
        compressed.message()
    assert err.value.status == Status.INTERNAL  # compressed, yet no grpc-encoding
    two = RequestBody()
    two.feed(b"\x00\x00\x00\x00\x01a\x00\x00\x00\x00\x01b")
    with pytest.raises(RequestError):
        two.message()


def test_status_message_is_percent_encoded() -> None:
    assert status_trailers(Status.NOT_FOUND, "ns/web 100% gone\n") == [
        (b"grpc-status", b"5"),
        (b"grpc-message", b"ns/web 100%25 gone%0A"),
    ]


# -- over a socket -------------------------------------------------------------------------------


def _slice(first: int, count: int, name: str = "web-a") -> dict[str, Any]:
    eps = [(f"10.1.{(first + i) // 256}.{(first + i) % 256}", None) for i in range(count)]
    return t.endpoint_slice("web", eps, name=name)


class App:
    def __init__(self, app: DestinationApp, sources: dict[str, MemorySource]) -> None:
        self.app = app
        self.sources = sources


@pytest.fixture
async def served() -> AsyncIterator[App]:
    sources = memory_sources(t.namespace("ns"), t.service("web"), _slice(1, 3))
    settings = DestinationSettings(
        grpc_addr="127.0.0.1:0", policy_addr="", admin_addr="127.0.0.1:0"
    )
    app = DestinationApp(settings, dict(sources))  # type: ignore[arg-type]
    await asyncio.wait_for(app.start(), TIMEOUT)
    try:
        yield App(app, sources)
    finally:
        await app.stop()


def _request_headers(method: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", method),
        (b":authority", b"destination"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]


class RawClient:
    """An HTTP/2 client that only opens its windows when told to."""

    def __init__(self, window: int) -> None:
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
        )
        self.data: dict[int, bytearray] = {}
        self.trailers: dict[int, dict[bytes, bytes]] = {}
        self.reset: set[int] = set()
        self.reset_codes: dict[int, int] = {}
        self.goaway: int | None = None
        self.pings = 0
        self.eof = False
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def connect(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.h2.initiate_connection()
        self._flush()
        self._task = asyncio.create_task(self._read())

    def _flush(self) -> None:
        self.writer.write(self.h2.data_to_send())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionResetError):
            await self._read_frames()
        self.eof = True
        self.changed.set()

    async def _read_frames(self) -> None:
        while chunk := await self.reader.read(65536):
            for event in self.h2.receive_data(chunk):
                if isinstance(event, h2.events.DataReceived):
                    self.data.setdefault(event.stream_id or 0, bytearray()).extend(
                        event.data or b""
                    )
                elif isinstance(event, (h2.events.TrailersReceived, h2.events.ResponseReceived)):
                    headers = dict(event.headers or ())  # type: ignore[arg-type]
                    if b"grpc-status" in headers:  # trailers, or a trailers-only response
                        self.trailers[event.stream_id or 0] = headers
                elif isinstance(event, h2.events.StreamReset):
                    self.reset.add(event.stream_id or 0)
                    self.reset_codes[event.stream_id or 0] = int(event.error_code or 0)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self.goaway = event.error_code
                elif isinstance(event, h2.events.PingReceived):
                    self.pings += 1  # h2 queues the ACK
            self._flush()
            self.changed.set()

    def get(self, path: str = PATH, method: bytes = GET, extra: tuple[Any, ...] = ()) -> int:
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, [*_request_headers(method), *extra])
        request = destination_pb2.GetDestination(path=path).SerializeToString()
        self.h2.send_data(sid, b"\x00" + len(request).to_bytes(4, "big") + request, end_stream=True)
        self._flush()
        return sid

    def open_request(self, method: bytes = GET) -> int:
        """Starts a request whose body is still to come."""
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, [*_request_headers(method)])
        self._flush()
        return sid

    async def send_body(self, sid: int, data: bytes) -> None:
        """Sends ``data`` on ``sid`` as the server's windows allow."""
        while data:
            await self.until(
                lambda: sid in self.reset or self.h2.local_flow_control_window(sid) > 0
            )
            if sid in self.reset:
                return
            size = min(
                len(data), self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size
            )
            self.h2.send_data(sid, data[:size])
            self._flush()
            data = data[size:]

    def open_window(self, sid: int, size: int) -> None:
        if sid:
            self.h2.increment_flow_control_window(size, sid)
        self.h2.increment_flow_control_window(size)
        self._flush()

    def cancel(self, sid: int) -> None:
        self.h2.reset_stream(sid)
        self._flush()

    def updates(self, sid: int) -> list[destination_pb2.Update]:
        buf = bytes(self.data.get(sid, b""))
        out = []
        while len(buf) >= 5:
            length = int.from_bytes(buf[1:5], "big")
            if len(buf) < 5 + length:
                break
            out.append(destination_pb2.Update.FromString(buf[5 : 5 + length]))
            buf = buf[5 + length :]
        return out

    async def until(self, predicate: Any) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        self.writer.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def held(updates: list[destination_pb2.Update]) -> set[str]:
    ips: set[str] = set()
    for u in updates:
        if u.WhichOneof("update") == "add":
            ips |= {ip_from_proto(a.addr.ip) for a in u.add.addrs}
        elif u.WhichOneof("update") == "remove":
            ips -= {ip_from_proto(a.ip) for a in u.remove.addrs}
    return ips


async def eventually(predicate: Any) -> None:
    """Polls server-side state that no client event announces."""
    async with asyncio.timeout(TIMEOUT):
        while not predicate():  # noqa: ASYNC110 - the server announces nothing to wait on
            await asyncio.sleep(0.005)


async def _flushed(app: DestinationApp) -> None:
    """Lets the memory source's watch event reach the topics and the stream writes go out."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_reader_with_a_closed_window_costs_one_pending_change_then_catches_up(
    served: App,
) -> None:
    client = RawClient(window=0)
    await client.connect(served.app.grpc_port)
    sid = client.get()
    registry = served.app.api.registry
    await eventually(lambda: len(registry) == 1)
    (topic,) = registry._topics.values()
    (stream,) = topic.subscribers
    await eventually(lambda: stream.pending is not None)  # type: ignore[attr-defined]
    pending_initial = len(stream.pending)  # type: ignore[attr-defined]
    # 150 changes (more than Linkerd's 100-message queue) while the client reads nothing.
    for i in range(150):
        served.sources["endpointslices"].apply(_slice(1, 3 + (i % 7)))
        await _flushed(served.app)
    assert stream.stale  # type: ignore[attr-defined]
    assert len(stream.pending) == pending_initial  # type: ignore[attr-defined]  # nothing more held
    client.open_window(sid, 1 << 20)
    final = {f"10.1.0.{i}" for i in range(1, 1 + 3 + (149 % 7))}
    await client.until(lambda: held(client.updates(sid)) == final)
    # The initial set, then one catch-up diff: not 150 updates, and the stream is still open.
    assert len(client.updates(sid)) <= 3
    assert sid not in client.trailers
    assert sid not in client.reset
    served.sources["endpointslices"].apply(_slice(1, 2))
    await client.until(lambda: held(client.updates(sid)) == {"10.1.0.1", "10.1.0.2"})
    await client.close()


def test_serves_on_uvloop() -> None:
    """The service runs on uvloop, whose transports are not asyncio.Transport subclasses."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> set[str]:
        sources = memory_sources(t.namespace("ns"), t.service("web"), _slice(1, 3))
        settings = DestinationSettings(
            grpc_addr="127.0.0.1:0", policy_addr="", admin_addr="127.0.0.1:0"
        )
        app = DestinationApp(settings, dict(sources))  # type: ignore[arg-type]
        await asyncio.wait_for(app.start(), TIMEOUT)
        client = RawClient(window=1 << 20)
        try:
            await client.connect(app.grpc_port)
            sid = client.get()
            await client.until(lambda: bool(client.updates(sid)))
            return held(client.updates(sid))
        finally:
            await client.close()
            await app.stop()

    assert uvloop.run(scenario()) == {"10.1.0.1", "10.1.0.2", "10.1.0.3"}


async def test_large_sets_span_frames_and_windows(served: App) -> None:
    served.sources["endpointslices"].apply(_slice(1, 3000))
    await _flushed(served.app)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.app.grpc_port}") as channel:
        call = destination_pb2_grpc.DestinationStub(channel).Get(
            destination_pb2.GetDestination(path=PATH)
        )
        first = await asyncio.wait_for(call.read(), TIMEOUT)
        assert isinstance(first, destination_pb2.Update)
        assert len(first.add.addrs) == 3000
        assert first.ByteSize() > 65535  # more than one default window and many frames
        call.cancel()


async def test_a_fan_out_past_the_turn_budget_finishes_over_later_turns(served: App) -> None:
    served.sources["endpointslices"].apply(_slice(1, 3000))
    await _flushed(served.app)
    client = RawClient(window=1 << 24)
    await client.connect(served.app.grpc_port)
    client.open_window(0, 1 << 28)
    sids = [client.get() for _ in range(10)]
    expected = {f"10.1.{(1 + i) // 256}.{(1 + i) % 256}" for i in range(3000)}
    # Ten snapshots of ~70 kB each exceed one turn's budget: the rest goes in later turns.
    await client.until(lambda: all(held(client.updates(s)) == expected for s in sids))
    await client.close()


async def test_client_reset_unsubscribes_the_stream(served: App) -> None:
    client = RawClient(window=1 << 20)
    await client.connect(served.app.grpc_port)
    sid = client.get()
    await client.until(lambda: bool(client.updates(sid)))
    assert len(served.app.api.registry) == 1
    client.cancel(sid)
    await eventually(lambda: len(served.app.api.registry) == 0)
    assert b'gossamer_destination_streams{rpc="Get"} 0' in served.app.registry.render()
    await client.close()


async def test_a_client_resetting_streams_by_the_hundred_is_told_to_calm_down(
    served: App,
) -> None:
    client = RawClient(window=1 << 20)
    await client.connect(served.app.grpc_port)
    for _ in range(300):  # a rapid reset: open, and cancel before reading
        client.cancel(client.get())
    await client.until(lambda: client.goaway is not None)
    assert client.goaway == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    await eventually(lambda: len(served.app.api.registry) == 0)
    await client.close()
    # A client that cancels now and then is never near the limit.
    polite = RawClient(window=1 << 20)
    await polite.connect(served.app.grpc_port)
    for _ in range(20):
        sid = polite.get()
        await polite.until(lambda sid=sid: bool(polite.updates(sid)))  # type: ignore[misc]
        polite.cancel(sid)
    last = polite.get()
    await polite.until(lambda: bool(polite.updates(last)))
    assert polite.goaway is None
    await polite.close()


async def test_a_protocol_violation_gets_goaway_and_a_closed_connection(served: App) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.app.grpc_port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not the HTTP/2 preface
    received = await asyncio.wait_for(reader.read(), TIMEOUT)  # until the server closes
    writer.close()
    assert b"\x07\x00\x00\x00\x00\x00" in received  # a GOAWAY frame (type 7) on stream 0


async def test_deadline_ends_a_watch_with_deadline_exceeded(served: App) -> None:
    client = RawClient(window=1 << 20)
    await client.connect(served.app.grpc_port)
    sid = client.get(extra=((b"grpc-timeout", b"50m"),))
    await client.until(lambda: sid in client.trailers)
    assert client.trailers[sid][b"grpc-status"] == b"4"
    assert held(client.updates(sid)) == {"10.1.0.1", "10.1.0.2", "10.1.0.3"}
    assert len(served.app.api.registry) == 0
    await client.close()


async def test_unknown_methods_and_bad_requests_get_a_status(served: App) -> None:
    client = RawClient(window=1 << 20)
    await client.connect(served.app.grpc_port)
    unknown = client.get(method=b"/io.linkerd.proxy.destination.Destination/Nope")
    bad_path = client.get(path="not a name")
    await client.until(lambda: unknown in client.trailers and bad_path in client.trailers)
    assert client.trailers[unknown][b"grpc-status"] == str(int(Status.UNIMPLEMENTED)).encode()
    assert client.trailers[bad_path][b"grpc-status"] == str(int(Status.INVALID_ARGUMENT)).encode()
    await client.close()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.app.grpc_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary("/nope.Nope/Nope", None, None)(b"")
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_stop_ends_open_streams_with_unavailable(served: App) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.app.grpc_port}") as channel:
        call = destination_pb2_grpc.DestinationStub(channel).Get(
            destination_pb2.GetDestination(path=PATH)
        )
        await asyncio.wait_for(call.read(), TIMEOUT)
        assert served.app.grpc_server is not None
        await served.app.grpc_server.stop()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(call.read(), TIMEOUT)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def _server_connection(app: DestinationApp) -> GrpcConnection:
    assert app.grpc_server is not None
    (conn,) = app.grpc_server.connections
    return conn


async def test_unfinished_requests_hold_at_most_a_bounded_number_of_bytes(served: App) -> None:
    client = RawClient(window=1 << 20)
    await client.connect(served.app.grpc_port)
    sids = [client.open_request() for _ in range(24)]
    for sid in sids:  # 24 bodies of 60,000 bytes, none finished: 1.4 MB in all
        await client.send_body(sid, b"\x00" + (59_995).to_bytes(4, "big") + b"x" * 59_995)
        assert _server_connection(served.app).request_bytes <= MAX_BUFFERED_REQUEST_BYTES
    refused = [sid for sid in sids if sid in client.trailers]
    assert refused  # the streams past the connection's budget were answered, not buffered
    exhausted = str(int(Status.RESOURCE_EXHAUSTED)).encode()
    assert all(client.trailers[sid][b"grpc-status"] == exhausted for sid in refused)
    assert set(refused) <= client.reset  # and told to stop sending
    # The refused streams' bytes are gone: a new request on the same connection is served.
    sid = client.get()
    await client.until(lambda: bool(client.updates(sid)))
    for open_sid in sids:
        if open_sid not in refused:
            client.cancel(open_sid)
    await eventually(lambda: _server_connection(served.app).request_bytes == 0)
    await client.close()


async def test_a_client_that_never_reads_cannot_make_first_answers_pile_up(served: App) -> None:
    served.sources["endpointslices"].apply(_slice(1, 3000))  # a ~70 kB snapshot
    await _flushed(served.app)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.app.grpc_port)
    client = RawClient(window=1 << 24)
    client.writer = writer
    client.h2.initiate_connection()
    client.open_window(0, 1 << 30)
    # 300 streams in one write (21 MB of snapshots), and the client never reads a byte.
    sids = [client.get() for _ in range(300)]
    conn = _server_connection(served.app)
    await eventually(lambda: conn.paused)
    for _ in range(10):
        await asyncio.sleep(0)  # turns in which a server that ignored backpressure would write
    assert conn.transport is not None
    assert conn.transport.get_write_buffer_size() < 1 << 20
    assert len(conn.streams) == len(sids)
    # The waiting streams hold views of one snapshot, not copies of it.
    held_objects = {id(s.pending.obj) for s in conn.streams.values() if s.pending is not None}
    assert len(held_objects) <= 2
    writer.close()
    del reader


@pytest.fixture
async def quick(served: App) -> AsyncIterator[GrpcServer]:
    """A second server on the same method table, with timers short enough for a test."""
    server = GrpcServer(
        served.app.api.methods(),
        served.app.api,
        handshake_timeout=0.5,
        keepalive_interval=0.05,
        keepalive_timeout=1.0,
    )
    server.port = await server.listen("127.0.0.1", 0)  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        await server.stop()


async def test_a_connection_that_never_sends_a_request_is_closed(quick: GrpcServer) -> None:
    port = quick.port  # type: ignore[attr-defined]
    silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
    # Preface and SETTINGS, but never a request (the client reads and acks PINGs).
    idle = RawClient(window=1 << 20)
    await idle.connect(port)
    async with asyncio.timeout(TIMEOUT):
        await silent_reader.read()  # EOF: the server closed the connection
    await idle.until(lambda: idle.eof)
    assert idle.goaway == h2.errors.ErrorCodes.NO_ERROR
    silent.close()
    await idle.close()


async def test_keepalive_pings_keep_a_live_client_and_drop_a_vanished_one(
    served: App, quick: GrpcServer
) -> None:
    port = quick.port  # type: ignore[attr-defined]
    registry = served.app.api.registry
    live = RawClient(window=1 << 20)
    await live.connect(port)
    sid = live.get()
    await live.until(lambda: bool(live.updates(sid)) and live.pings >= 5)
    assert not live.eof
    assert sid not in live.trailers
    assert sid not in live.reset
    # A peer that vanished: it subscribed, then never reads (so never ACKs a PING) again.
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    gone = RawClient(window=1 << 20)
    gone.writer = writer
    gone.h2.initiate_connection()
    gone.get()
    (topic,) = registry._topics.values()
    await eventually(lambda: len(topic.subscribers) == 2)
    # The vanished peer's connection is closed and its subscription ended; the live one stays.
    await eventually(lambda: len(quick.connections) == 1 and len(topic.subscribers) == 1)
    assert not live.eof
    writer.close()
    await live.close()


async def test_a_refusal_while_the_client_still_sends_also_resets_the_stream(
    served: App,
) -> None:
    client = RawClient(window=1 << 20)
    await client.connect(served.app.grpc_port)
    unknown = client.open_request(b"/io.linkerd.proxy.destination.Destination/Nope")
    await client.until(lambda: unknown in client.reset)
    assert client.trailers[unknown][b"grpc-status"] == str(int(Status.UNIMPLEMENTED)).encode()
    assert client.reset_codes[unknown] == h2.errors.ErrorCodes.NO_ERROR
    # A request that was complete when refused needs no reset.
    finished = client.get(method=b"/io.linkerd.proxy.destination.Destination/Nope")
    await client.until(lambda: finished in client.trailers)
    assert finished not in client.reset
    await client.close()


async def test_the_header_list_limit_holds_before_the_client_acks_settings(served: App) -> None:
    client = RawClient(window=1 << 20)
    client.reader, client.writer = await asyncio.open_connection("127.0.0.1", served.app.grpc_port)
    client.h2.initiate_connection()
    # The first request, in the same write as the preface: 32 KiB of headers (limit 16 KiB).
    sid = client.get(extra=((b"x-padding", b"p" * 32 * 1024),))
    client._task = asyncio.create_task(client._read())
    await client.until(lambda: client.eof)  # GOAWAY and close (or a reset, if unread bytes)
    assert not client.updates(sid)
    await client.close()


@pytest.mark.parametrize("flags", [1, 2, 255])
async def test_a_compressed_or_flagged_request_without_an_encoding_is_internal(
    served: App, flags: int
) -> None:
    client = RawClient(window=1 << 20)
    await client.connect(served.app.grpc_port)
    sid = client.open_request()
    request = destination_pb2.GetDestination(path=PATH).SerializeToString()
    client.h2.send_data(
        sid, bytes([flags]) + len(request).to_bytes(4, "big") + request, end_stream=True
    )
    client._flush()
    await client.until(lambda: sid in client.trailers)
    assert client.trailers[sid][b"grpc-status"] == str(int(Status.INTERNAL)).encode()
    await client.close()
