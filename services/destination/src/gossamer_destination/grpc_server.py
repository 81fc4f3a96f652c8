"""A lean gRPC server (HTTP/2 with prior knowledge) for the destination's watch streams.

Why not ``grpc.aio``: a change fanned out to 1,000 ``Get`` streams cost 24 to 37 ms of CPU in
grpcio's per-stream write path alone, even with the update encoded once (each stream is a
task woken per message, and each message goes through the C core's per-call batch). Here a
stream is a plain object the topic calls directly (:meth:`GrpcStream.offer`): the update is
framed once for all streams (:class:`~gossamer_destination.topics.Change`), each stream adds
only a 9-byte DATA frame header, and a connection's frames go out in one ``writelines`` per
event-loop turn. No task, queue or future exists per stream.

The HTTP/2 state machine (``jh2``, h2's maintained fork, which also skips h2's eager
``repr`` of every received frame: a client's WINDOW_UPDATEs after a fan-out are one frame
per stream) parses what clients send, answers SETTINGS and PING, and
writes HEADERS and trailers. DATA frames bypass it; their bytes are taken off h2's own
outbound flow-control windows (``outbound_flow_control_window`` of the connection and of the
stream, which h2 keeps up to date from WINDOW_UPDATE and SETTINGS), so there is one account.

Bounded memory per stream: a stream that cannot send (its window or the connection's is
spent, or the socket's write buffer is past its high-water mark) keeps at most the rest of
the one change it was sending, a view of bytes shared with every other stream, and is marked
stale. Further changes are dropped for it; when it can send again it asks its topic for one
change from the state its client holds to the current one (a snapshot diff). Reading pauses
while writes are backed up, so a peer that does not read cannot make the server buffer
answers (SETTINGS and PING ACKs) beyond what one read brought in. Unfinished requests hold
at most :data:`MAX_BUFFERED_REQUEST_BYTES` per connection.

Liveness: a connection must send its first request within :data:`HANDSHAKE_TIMEOUT`, and
must ACK the server's keepalive PINGs (:data:`KEEPALIVE_INTERVAL`, :data:`KEEPALIVE_TIMEOUT`),
so a vanished or never-reading peer does not hold its subscriptions forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import structlog
from google.protobuf.message import DecodeError
from gossamer_common.grpc_http2 import (
    RESPONSE_HEADERS,
    RequestBody,
    RequestError,
    Status,
    data_frames,
    parse_request_head,
    status_trailers,
    trailers_only,
)
from gossamer_common.h2flood import FloodGuard

from gossamer_destination.topics import Change, Subscriber, Topic

if TYPE_CHECKING:  # jh2 keeps h2's API but ships no annotations
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
    import h2.settings
    import h2.stream
else:
    import jh2 as h2
    import jh2.config
    import jh2.connection
    import jh2.errors
    import jh2.events
    import jh2.exceptions
    import jh2.settings
    import jh2.stream

log = structlog.get_logger(__name__)

#: Enough for a benchmark's 1,000 ``Get`` streams on one connection (a proxy uses a handful).
MAX_CONCURRENT_STREAMS = 2_048
#: Request bytes a connection may hold across its unfinished requests; a request that would
#: pass it is refused (RESOURCE_EXHAUSTED and RST_STREAM) and its bytes dropped.
MAX_BUFFERED_REQUEST_BYTES = 1 << 20
MAX_HEADER_LIST_SIZE = 16 * 1024
_DATA_NO_FLAGS = b"\x00\x00"  # frame type DATA, no flags
#: DATA bytes a connection queues in one event-loop turn before its streams wait for the next
#: (a client with huge windows that does not read must not make one fan-out copy a change
#: into the socket buffer once per stream).
TURN_BUDGET = 256 * 1024
#: Seconds a connection has to send the HTTP/2 preface and its first request.
HANDSHAKE_TIMEOUT = 20.0
#: Seconds between the server's keepalive PINGs, and how long an ACK may take before the
#: peer counts as gone (its subscriptions end with the connection).
KEEPALIVE_INTERVAL = 30.0
KEEPALIVE_TIMEOUT = 20.0
_KEEPALIVE_PING = b"gsmr-ka!"


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC: how to read its request and which topic answers it.

    ``resolve`` raises :class:`RequestError` for a request to refuse. A unary method answers
    with the topic's current message; a streaming one subscribes to the topic.
    """

    rpc: str
    parse: Callable[[bytes], Any]
    resolve: Callable[[Any], Topic]
    unary: bool = False


class Observer(Protocol):
    """Metrics hooks."""

    def opened(self, rpc: str) -> None: ...

    def closed(self, rpc: str) -> None: ...

    def failed(self, rpc: str, status: Status) -> None: ...


class GrpcStream:
    """One request; for a watch, a subscriber of its topic."""

    __slots__ = (
        "body",
        "buffered",
        "closed",
        "conn",
        "deadline",
        "finish",
        "frame_id",
        "h2_stream",
        "id",
        "method",
        "pending",
        "stale",
        "state",
        "subscribed",
        "timeout",
        "topic",
    )

    def __init__(self, conn: GrpcConnection, stream_id: int, method: Method) -> None:
        self.conn = conn
        self.id = stream_id
        self.frame_id = stream_id.to_bytes(4, "big")
        self.method = method
        self.body: RequestBody | None = RequestBody()
        self.buffered = 0
        """Request bytes this stream holds, counted in ``conn.request_bytes``."""
        self.h2_stream: h2.stream.H2Stream | None = None
        self.topic: Topic | None = None
        self.state: object = None
        self.pending: memoryview | None = None
        """The unsent rest of the change being sent (its state is already ``state``)."""
        self.stale = False
        """Changes were dropped: catch up from ``state`` once the stream can send."""
        self.finish: tuple[Status, str] | None = None
        """Trailers to send once ``pending`` is out (unary answers)."""
        self.deadline: asyncio.TimerHandle | None = None
        self.timeout: float | None = None
        self.subscribed = False
        self.closed = False

    def offer(self, change: Change, prev: object, new: object) -> None:
        """A topic published ``change`` (from state ``prev`` to ``new``)."""
        if self.pending is None and not self.stale and prev is self.state:
            conn = self.conn
            if not conn.paused and conn.queued < TURN_BUDGET:
                self.state = new
                conn.send(self, change.framed)
                return
        if not self.stale:
            self.stale = True
            self.conn.blocked[self] = None


class GrpcConnection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: GrpcServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        config = h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=True
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: server.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
            },
        )
        # h2 applies its own SETTINGS only once the client ACKs them; until then a request's
        # headers would be held to the 64 KiB default instead.
        self.h2.decoder.max_header_list_size = MAX_HEADER_LIST_SIZE
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, GrpcStream] = {}
        self.blocked: dict[GrpcStream, None] = {}
        """Streams with something to send once windows open or writes drain (in order)."""
        self.paused = False
        """The socket's write buffer is past its high-water mark."""
        self.queued = 0
        """DATA bytes queued this turn (see :data:`TURN_BUDGET`)."""
        self.request_bytes = 0
        """Request bytes held by unfinished requests (see :data:`MAX_BUFFERED_REQUEST_BYTES`)."""
        self._windows_opened = False
        self.guard = FloodGuard()
        self._reset_now: set[int | None] = set()
        """PING/SETTINGS ACKs owed while backed up, and client resets (rapid reset)."""
        self._out: list[bytes | memoryview] = []
        self._flush_scheduled = False
        self._closing = False
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._keepalive_timer: asyncio.TimerHandle | None = None
        """The next keepalive PING, or the deadline of the one awaiting its ACK."""
        self._ping_outstanding = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        server = self.server
        self._handshake_timer = self.loop.call_later(server.handshake_timeout, self._handshake_late)
        self._keepalive_timer = self.loop.call_later(server.keepalive_interval, self._keepalive)
        self.h2.initiate_connection()
        self._emit_h2()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.info("destination.grpc_protocol_error", error=str(exc))
            code = getattr(exc, "error_code", None) or h2.errors.ErrorCodes.PROTOCOL_ERROR
            with contextlib.suppress(h2.exceptions.H2Error):
                self.h2.close_connection(error_code=code)
            self._emit_h2()
            self._abort()
            return
        # A stream opened and reset within one read costs no work (no lookup, no subscribe),
        # but its reset still counts against the flood limit.
        self._reset_now = {
            event.stream_id for event in events if isinstance(event, h2.events.StreamReset)
        }
        for event in events:
            self._handle(event)
            if self._closing:
                return
        if self._windows_opened:
            self._windows_opened = False
            self._resume()
        self._emit_h2()

    def pause_writing(self) -> None:
        self.paused = True
        self.guard.backed_up()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        self.guard.drained()
        if self.transport is not None and not self._closing:
            self.transport.resume_reading()
        self._resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._cancel_timers()
        self.server.connections.discard(self)
        for stream in list(self.streams.values()):
            self._close_stream(stream)
        self._out.clear()

    # -- events ------------------------------------------------------------------------------

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.DataReceived):
            self._data(event)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None and stream.body is not None and stream.id not in self._reset_now:
                self._dispatch(stream)
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id or 0, None)
            if stream is not None:
                self._close_stream(stream)
                if self.guard.client_reset(self.loop.time()):
                    log.info("destination.grpc_reset_flood", stream=event.stream_id)
                    self._calm()
        elif isinstance(event, (h2.events.PingReceived, h2.events.RemoteSettingsChanged)):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self._windows_opened = True  # a new initial window widens every stream's
            if self.guard.control_frame():  # an ACK is owed
                log.info("destination.grpc_control_frame_flood")
                self._calm()
        elif isinstance(event, h2.events.WindowUpdated):
            self._windows_opened = True
        elif isinstance(event, h2.events.PingAckReceived):
            if event.ping_data == _KEEPALIVE_PING and self._ping_outstanding:
                self._ping_outstanding = False
                if self._keepalive_timer is not None:
                    self._keepalive_timer.cancel()
                self._keepalive_timer = self.loop.call_later(
                    self.server.keepalive_interval, self._keepalive
                )
        elif isinstance(event, h2.events.ConnectionTerminated):
            # The client is going away; its streams end with the connection.
            self._abort()

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id or 0
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        try:
            head = parse_request_head(event.headers or ())
            method = self.server.methods.get(head.path)
            if method is None:
                raise RequestError(
                    Status.UNIMPLEMENTED, f"unknown method {head.path.decode(errors='replace')}"
                )
        except RequestError as exc:
            self._refuse(stream_id, exc.status, exc.message)
            return
        stream = GrpcStream(self, stream_id, method)
        self.streams[stream_id] = stream
        if stream_id in self._reset_now:
            return  # already reset by the client, later in this read
        stream.timeout = head.timeout
        stream.h2_stream = self.h2.streams.get(stream_id)
        if event.stream_ended is not None:
            self._dispatch(stream)

    def _data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id or 0
        self.h2.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)
        stream = self.streams.get(stream_id)
        if stream is None or stream.body is None:
            return
        data = event.data or b""
        try:
            if self.request_bytes + len(data) > MAX_BUFFERED_REQUEST_BYTES:
                raise RequestError(
                    Status.RESOURCE_EXHAUSTED, "too many request bytes on this connection"
                )
            stream.body.feed(data)
        except RequestError as exc:
            self._fail(stream, exc.status, exc.message)
            return
        stream.buffered += len(data)
        self.request_bytes += len(data)

    def _dispatch(self, stream: GrpcStream) -> None:
        method = stream.method
        body, stream.body = stream.body, None
        assert body is not None
        self._release_request(stream)
        try:
            try:
                request = method.parse(body.message())
            except DecodeError as exc:
                raise RequestError(Status.INTERNAL, "could not parse the request") from exc
            topic = method.resolve(request)
        except RequestError as exc:
            self._fail(stream, exc.status, exc.message)
            return
        except Exception:
            log.exception("destination.grpc_handler_failed", rpc=method.rpc)
            self._fail(stream, Status.UNKNOWN, "internal error")
            return
        if method.unary:
            sub = Subscriber(topic, 1)
            messages = sub.start()
            sub.close()
            if not messages:
                self._fail(stream, Status.UNAVAILABLE, "no answer yet")
                return
            self._send_headers(stream, RESPONSE_HEADERS)
            stream.finish = (Status.OK, "")
            self._send_first(stream, Change((messages[-1],)).framed)
            return
        self._send_headers(stream, RESPONSE_HEADERS)
        stream.topic = topic
        stream.subscribed = True
        self.server.observer.opened(method.rpc)
        change, stream.state = topic.subscribe(stream)
        if stream.timeout is not None:
            stream.deadline = self.loop.call_later(stream.timeout, self._expire, stream)
        if change is not None:
            self._send_first(stream, change.framed)

    def _send_first(self, stream: GrpcStream, framed: bytes) -> None:
        """Sends a stream's first message, or holds it (shared, not copied) while backed up."""
        if self.paused or self.queued >= TURN_BUDGET:
            stream.pending = memoryview(framed)
            self.blocked[stream] = None
        else:
            self.send(stream, framed)

    # -- timers ------------------------------------------------------------------------------

    def _handshake_late(self) -> None:
        """No first request in time (or not even the preface): close the connection."""
        self._handshake_timer = None
        log.info("destination.grpc_handshake_timeout")
        self._goaway_and_close(h2.errors.ErrorCodes.NO_ERROR)

    def _keepalive(self) -> None:
        """Sends a keepalive PING; the connection closes if no ACK comes in time."""
        if self._closing:
            return
        try:
            self.h2.ping(_KEEPALIVE_PING)
        except h2.exceptions.H2Error:
            self._keepalive_timer = None
            return
        self._emit_h2()
        self._ping_outstanding = True
        self._keepalive_timer = self.loop.call_later(
            self.server.keepalive_timeout, self._keepalive_unanswered
        )

    def _keepalive_unanswered(self) -> None:
        self._keepalive_timer = None
        log.info("destination.grpc_keepalive_timeout", streams=len(self.streams))
        self._abort()  # the peer is gone or does not read: a GOAWAY would not be read either

    def _cancel_timers(self) -> None:
        for timer in (self._handshake_timer, self._keepalive_timer):
            if timer is not None:
                timer.cancel()
        self._handshake_timer = self._keepalive_timer = None

    def _expire(self, stream: GrpcStream) -> None:
        stream.deadline = None
        self._fail(stream, Status.DEADLINE_EXCEEDED, "deadline exceeded")

    # -- sending -----------------------------------------------------------------------------

    def send(self, stream: GrpcStream, data: bytes | memoryview) -> None:
        """Sends what the windows allow of ``data``; the rest waits in ``stream.pending``."""
        h2_stream = stream.h2_stream
        if h2_stream is None or stream.closed:
            return
        conn = self.h2
        size = len(data)
        allowed = min(h2_stream.outbound_flow_control_window, conn.outbound_flow_control_window)
        sent = size if size <= allowed else max(allowed, 0)
        if sent:
            if sent == size and size <= conn.max_outbound_frame_size:
                # The common case, once per stream in a fan-out: one frame, header built here.
                self._out += (size.to_bytes(3, "big") + _DATA_NO_FLAGS + stream.frame_id, data)
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    self.loop.call_soon(self._flush)
            else:
                chunk = data if sent == size else memoryview(data)[:sent]
                self._queue(data_frames(stream.id, chunk, conn.max_outbound_frame_size))
            h2_stream.outbound_flow_control_window -= sent
            conn.outbound_flow_control_window -= sent
            self.queued += sent
        if sent < size:
            stream.pending = memoryview(data)[sent:]
            self.blocked[stream] = None
        elif stream.finish is not None:
            status, message = stream.finish
            self._end(stream, status, message)

    def _resume(self) -> None:
        """Windows opened or writes drained: send what blocked streams hold."""
        for stream in list(self.blocked):
            if (
                self.paused
                or self.queued >= TURN_BUDGET
                or self.h2.outbound_flow_control_window <= 0
            ):
                return
            if stream.closed:
                self.blocked.pop(stream, None)
                continue
            pending = stream.pending
            if pending is not None:
                stream.pending = None
                self.send(stream, pending)
                if stream.pending is not None or stream.closed:
                    continue
            if stream.stale and stream.topic is not None:
                stream.stale = False
                change, stream.state = stream.topic.catch_up(stream.state)
                if change is not None:
                    self.send(stream, change.framed)
                    if stream.pending is not None:
                        continue
            self.blocked.pop(stream, None)

    def _send_headers(self, stream: GrpcStream, headers: Any, end: bool = False) -> None:
        try:
            self.h2.send_headers(stream.id, headers, end_stream=end)
        except h2.exceptions.H2Error:
            self._close_stream(stream)
            return
        self._emit_h2()

    def _refuse(self, stream_id: int, status: Status, message: str) -> None:
        """Answers a request that never became a stream with a trailers-only response."""
        try:
            self.h2.send_headers(stream_id, trailers_only(status, message), end_stream=True)
            h2_stream = self.h2.streams.get(stream_id)
            if h2_stream is not None and not h2_stream.closed:
                # The client is still sending: tell it to stop (its bytes would be dropped).
                self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
        except h2.exceptions.H2Error:
            return
        self._emit_h2()

    def _fail(self, stream: GrpcStream, status: Status, message: str) -> None:
        """Ends a stream with an error status (resetting it if a message is half sent)."""
        if stream.closed:
            return
        self.server.observer.failed(stream.method.rpc, status)
        if stream.subscribed or stream.finish is not None:
            self._end(stream, status, message)
        else:
            self._refuse(stream.id, status, message)
            self._close_stream(stream)

    def _end(self, stream: GrpcStream, status: Status, message: str) -> None:
        if stream.pending is not None:
            # Part of a message is out: trailers now would truncate it, so cancel instead.
            with contextlib.suppress(h2.exceptions.H2Error):
                self.h2.reset_stream(stream.id, h2.errors.ErrorCodes.CANCEL)
            self._emit_h2()
        else:
            self._send_headers(stream, status_trailers(status, message), end=True)
        self._close_stream(stream)

    def _close_stream(self, stream: GrpcStream) -> None:
        if stream.closed:
            return
        stream.closed = True
        stream.pending = None
        stream.body = None
        self._release_request(stream)
        self.streams.pop(stream.id, None)
        self.blocked.pop(stream, None)
        if stream.deadline is not None:
            stream.deadline.cancel()
            stream.deadline = None
        if stream.subscribed and stream.topic is not None:
            stream.topic.unsubscribe(stream)
            self.server.observer.closed(stream.method.rpc)

    def _release_request(self, stream: GrpcStream) -> None:
        self.request_bytes -= stream.buffered
        stream.buffered = 0

    def _emit_h2(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self._queue((data,))

    def _queue(self, parts: list[bytes | memoryview] | tuple[bytes, ...]) -> None:
        self._out.extend(parts)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self.queued = 0
        out, self._out = self._out, []
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(out)
            if self.blocked and not self.paused and not self._closing:
                self._resume()  # streams that waited for this turn's budget

    def _abort(self) -> None:
        """Ends every stream and closes the connection once what is queued is written."""
        if self._closing:
            return
        self._closing = True
        self._cancel_timers()
        for stream in list(self.streams.values()):
            self._close_stream(stream)
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def _goaway_and_close(self, code: h2.errors.ErrorCodes) -> None:
        with contextlib.suppress(h2.exceptions.H2Error):
            self.h2.close_connection(error_code=code)
        self._emit_h2()
        self._abort()

    def _calm(self) -> None:
        """The client passed a flood limit: GOAWAY(ENHANCE_YOUR_CALM) and close."""
        self._goaway_and_close(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)

    def shutdown(self) -> None:
        """Server stopping: each stream ends with UNAVAILABLE, then GOAWAY and close."""
        if self._closing:
            return
        for stream in list(self.streams.values()):
            if stream.subscribed:
                self._end(stream, Status.UNAVAILABLE, "server shutting down")
        with contextlib.suppress(h2.exceptions.H2Error):
            self.h2.close_connection()
        self._emit_h2()
        self._abort()


class GrpcServer:
    """Listeners sharing one method table."""

    def __init__(
        self,
        methods: Mapping[bytes, Method],
        observer: Observer,
        *,
        max_concurrent_streams: int = MAX_CONCURRENT_STREAMS,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
    ) -> None:
        self.methods = methods
        self.observer = observer
        self.max_concurrent_streams = max_concurrent_streams
        self.handshake_timeout = handshake_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[GrpcConnection] = set()
        self._servers: list[asyncio.Server] = []

    async def listen(self, host: str, port: int) -> int:
        """Starts a listener; returns the port it bound."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: GrpcConnection(self), host, port)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.shutdown()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
