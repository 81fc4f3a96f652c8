"""A lean gRPC server for unary calls (HTTP/2 with prior knowledge), on jh2 and asyncio.

Why not ``grpc.aio``: for the identity service's Certify, grpcio's server cost about 0.3 ms of
CPU per call with an empty handler, and a further ~0.25 ms once the handler did real work (the
C core's completion-queue thread hands every event to the event loop, and the two contend for
the GIL), which was more than the certificate's own checks and signature. Here a call is
parsed by jh2's state machine in the loop's own thread, the handler runs as one task, and the
answer (HEADERS, DATA, trailers) goes out with the connection's other frames in one
``writelines`` per event-loop turn.

The wire rules (request head, message framing, statuses, ``grpc-timeout``) are the sans-io ones
of :mod:`gossamer_common.grpc_http2`, which the destination's streaming server uses as well.

Bounds, since every peer is hostile:

* a request message may be at most its method's ``max_request_bytes``, and a connection's
  unfinished requests hold at most :data:`MAX_BUFFERED_REQUEST_BYTES` between them;
* at most ``max_concurrent_streams`` calls per connection run at once (advertised in SETTINGS;
  a client that opens more breaks the protocol and loses the connection);
* reading pauses while the socket's writes are backed up, and PING/SETTINGS floods and rapid
  resets end the connection with ``GOAWAY(ENHANCE_YOUR_CALM)`` (:mod:`gossamer_common.h2flood`);
* a connection must send its first request within ``handshake_timeout`` and must ACK the
  server's keepalive PINGs, so a vanished peer does not hold a socket forever;
* ``grpc-timeout`` is honoured: the handler is cancelled and the call ends DEADLINE_EXCEEDED.
  A client's RST_STREAM cancels the handler too;
* a connection remembers only its last :data:`MAX_RESET_RECORDS` reset streams (jh2 keeps a
  record of each of the last 65,536 closed streams: ~8 MB for one long-lived connection), and
  advertises a :data:`HEADER_TABLE_SIZE` of 4,096 bytes (the HTTP/2 default; jh2's is 65,536)
  for the HPACK table the client may make it keep.

A client's GOAWAY means it opens no more calls: those it sent are still answered, then the
connection closes (RFC 9113 §6.8).

Handlers take the request message's bytes and return the response message's bytes, raising
:class:`~gossamer_common.grpc_http2.RequestError` to answer with a status; any other exception
answers UNKNOWN ("internal error") and is logged, as does a handler's own CancelledError (one
raised under it, not by the server cancelling it).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import structlog

from gossamer_common.grpc_http2 import (
    MAX_REQUEST_BYTES,
    RESPONSE_HEADERS,
    RequestBody,
    RequestError,
    Status,
    grpc_message,
    parse_request_head,
    status_trailers,
    trailers_only,
)
from gossamer_common.h2flood import FloodGuard

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

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "HEADER_TABLE_SIZE",
    "KEEPALIVE_INTERVAL",
    "KEEPALIVE_TIMEOUT",
    "MAX_BUFFERED_REQUEST_BYTES",
    "MAX_CONCURRENT_STREAMS",
    "MAX_RESET_RECORDS",
    "CallInfo",
    "UnaryMethod",
    "UnaryServer",
]

log = structlog.get_logger(__name__)

MAX_CONCURRENT_STREAMS = 256
#: Request bytes a connection may hold across its unfinished requests.
MAX_BUFFERED_REQUEST_BYTES = 1 << 20
MAX_HEADER_LIST_SIZE = 16 * 1024
#: The HPACK dynamic table the server keeps for a client's header blocks (HTTP/2's default).
HEADER_TABLE_SIZE = 4096
#: Streams closed by RST_STREAM that a connection remembers, newest first.
MAX_RESET_RECORDS = 1024
HANDSHAKE_TIMEOUT = 20.0
KEEPALIVE_INTERVAL = 30.0
KEEPALIVE_TIMEOUT = 20.0
_KEEPALIVE_PING = b"gsmr-ka!"
_GOAWAY_HEADER = b"\x00\x00\x08\x07\x00\x00\x00\x00\x00"  # length 8, type GOAWAY, stream 0


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What a handler may know about its caller."""

    peer: str
    """``ipv4:127.0.0.1:5000``-style, as grpcio reports peers."""


Handler = Callable[[bytes, CallInfo], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class UnaryMethod:
    """One unary RPC, e.g. ``/io.linkerd.proxy.identity.Identity/Certify``."""

    path: str
    handle: Handler
    max_request_bytes: int = MAX_REQUEST_BYTES


class _Call:
    """One request on a connection."""

    __slots__ = ("body", "buffered", "deadline", "id", "method", "pending", "task", "timeout")

    def __init__(self, stream_id: int, method: UnaryMethod, timeout: float | None) -> None:
        self.id = stream_id
        self.method = method
        self.timeout = timeout
        self.body: RequestBody | None = RequestBody(method.max_request_bytes)
        self.buffered = 0
        self.task: asyncio.Task[None] | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.pending: memoryview | None = None
        """Response bytes waiting for flow-control window (then the OK trailers)."""


class _ResetStreamRecords(OrderedDict[int, Any]):
    """How a connection's closed streams ended, kept for those closed by RST_STREAM only.

    jh2 remembers every closed stream, the last 65,536 of them. The record matters only for a
    reset stream: frames the client sent before it saw the RST_STREAM are then ignored instead
    of ending the connection. For a stream that ended normally a late frame is a connection
    error either way, so only resets are kept, the newest :data:`MAX_RESET_RECORDS` of them.
    """

    __slots__ = ()

    _RESETS = frozenset(
        {h2.stream.StreamClosedBy.SEND_RST_STREAM, h2.stream.StreamClosedBy.RECV_RST_STREAM}
    )

    def __setitem__(self, stream_id: int, closed_by: Any) -> None:
        if closed_by not in self._RESETS:
            return
        super().__setitem__(stream_id, closed_by)
        if len(self) > MAX_RESET_RECORDS:
            self.popitem(last=False)


def _peer_name(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"ipv6:[{host}]:{peer[1]}" if ":" in host else f"ipv4:{host}:{peer[1]}"
    return "unknown"


class _Connection(asyncio.Protocol):
    def __init__(self, server: UnaryServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=True,
            # What this server sends is its own constant headers and trailers (grpc-message is
            # percent-encoded): checking them on every call cost more than encoding them.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2._closed_streams = _ResetStreamRecords()
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: server.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
                h2.settings.SettingCodes.HEADER_TABLE_SIZE: HEADER_TABLE_SIZE,
            },
        )
        self.h2.decoder.max_header_list_size = MAX_HEADER_LIST_SIZE
        self.h2.decoder.max_allowed_table_size = HEADER_TABLE_SIZE
        self.transport: asyncio.Transport | None = None
        self.info = CallInfo(peer="unknown")
        self.calls: dict[int, _Call] = {}
        self.blocked: dict[_Call, None] = {}
        self.request_bytes = 0
        self.paused = False
        self.draining = False
        """GOAWAY sent or received: calls in flight finish, new ones are refused."""
        self.closing = False
        self.guard = FloodGuard()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._reset_now: set[int] = set()
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._ping_outstanding = False
        self.idle = asyncio.Event()
        self.idle.set()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        self.info = CallInfo(peer=_peer_name(transport))
        self.server.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        server = self.server
        self._handshake_timer = self.loop.call_later(server.handshake_timeout, self._handshake_late)
        self._keepalive_timer = self.loop.call_later(server.keepalive_interval, self._keepalive)
        self.h2.initiate_connection()
        self._emit()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.info("grpc.protocol_error", error=str(exc))
            code = getattr(exc, "error_code", None) or h2.errors.ErrorCodes.PROTOCOL_ERROR
            self._goaway_and_close(code)
            return
        self._reset_now = {
            event.stream_id or 0 for event in events if isinstance(event, h2.events.StreamReset)
        }
        windows_opened = False
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self._request(event)
            elif isinstance(event, h2.events.DataReceived):
                self._data(event)
            elif isinstance(event, h2.events.StreamEnded):
                call = self.calls.get(event.stream_id or 0)
                if call is not None and call.body is not None and call.id not in self._reset_now:
                    self._dispatch(call)
            elif isinstance(event, h2.events.StreamReset):
                call = self.calls.get(event.stream_id or 0)
                if call is not None:
                    self._close_call(call)
                    if self.guard.client_reset(self.loop.time()):
                        log.info("grpc.reset_flood", stream=event.stream_id)
                        self._calm()
            elif isinstance(event, (h2.events.PingReceived, h2.events.RemoteSettingsChanged)):
                windows_opened = windows_opened or isinstance(
                    event, h2.events.RemoteSettingsChanged
                )
                if self.guard.control_frame():
                    log.info("grpc.control_frame_flood")
                    self._calm()
            elif isinstance(event, h2.events.WindowUpdated):
                windows_opened = True
            elif isinstance(event, h2.events.PingAckReceived):
                self._ping_acked(event)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._client_goaway()
            if self.closing:
                return
        if windows_opened and self.blocked:
            for call in list(self.blocked):
                self._send_pending(call)
        self._emit()

    def _client_goaway(self) -> None:
        """The client opens no more calls: answer those it sent, then close.

        jh2 takes a GOAWAY as the end of the connection and would refuse to send the answers
        still owed (or to read the WINDOW_UPDATEs they need), so its state goes back to open.
        """
        self.h2.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
        self.draining = True
        if not self.calls:
            self._abort()

    def pause_writing(self) -> None:
        self.paused = True
        self.guard.backed_up()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        self.guard.drained()
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._cancel_timers()
        self.server.connections.discard(self)
        for call in list(self.calls.values()):
            self._close_call(call)
        self._out.clear()
        self.idle.set()

    # -- requests ----------------------------------------------------------------------------

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id or 0
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        try:
            if self.draining:
                raise RequestError(Status.UNAVAILABLE, "server shutting down")
            head = parse_request_head(event.headers or ())
            method = self.server.methods.get(head.path)
            if method is None:
                raise RequestError(
                    Status.UNIMPLEMENTED, f"unknown method {head.path.decode(errors='replace')}"
                )
        except RequestError as exc:
            self._refuse(stream_id, exc.status, exc.message)
            return
        call = _Call(stream_id, method, head.timeout)
        self.calls[stream_id] = call
        self.idle.clear()
        if call.timeout is not None:
            # The deadline covers the whole call, the request's upload included.
            call.deadline = self.loop.call_later(call.timeout, self._expire, call)
        if stream_id in self._reset_now:
            return  # reset later in this same read: the reset event closes it
        if event.stream_ended is not None:
            self._dispatch(call)

    def _data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id or 0
        self.h2.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)
        call = self.calls.get(stream_id)
        if call is None or call.body is None:
            return
        data = event.data or b""
        try:
            if self.request_bytes + len(data) > MAX_BUFFERED_REQUEST_BYTES:
                raise RequestError(
                    Status.RESOURCE_EXHAUSTED, "too many request bytes on this connection"
                )
            call.body.feed(data)
        except RequestError as exc:
            self._fail(call, exc.status, exc.message)
            return
        call.buffered += len(data)
        self.request_bytes += len(data)

    def _dispatch(self, call: _Call) -> None:
        body, call.body = call.body, None
        assert body is not None
        self._release_request(call)
        try:
            message = body.message()
        except RequestError as exc:
            self._fail(call, exc.status, exc.message)
            return
        call.task = self.loop.create_task(self._run(call, message))

    async def _run(self, call: _Call, message: bytes) -> None:
        method = call.method
        try:
            response = await method.handle(message, self.info)
        except RequestError as exc:
            self._fail(call, exc.status, exc.message)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # reset by the client, past its deadline, or the connection is gone
            log.exception("grpc.handler_cancelled", method=method.path)  # not by this server
            self._fail(call, Status.UNKNOWN, "internal error")
        except Exception:
            log.exception("grpc.handler_failed", method=method.path)
            self._fail(call, Status.UNKNOWN, "internal error")
        else:
            self._answer(call, response)
        finally:
            call.task = None
        self._emit()

    def _expire(self, call: _Call) -> None:
        call.deadline = None
        self._fail(call, Status.DEADLINE_EXCEEDED, "deadline exceeded")
        self._emit()

    # -- answers -----------------------------------------------------------------------------

    def _answer(self, call: _Call, response: bytes) -> None:
        if self.closing or self.calls.get(call.id) is not call:
            return
        try:
            self.h2.send_headers(call.id, RESPONSE_HEADERS)
        except h2.exceptions.H2Error:
            self._close_call(call)
            return
        call.pending = memoryview(grpc_message(response))
        self._send_pending(call)

    def _send_pending(self, call: _Call) -> None:
        """Sends what the flow-control windows allow, then the OK trailers."""
        pending = call.pending
        if pending is None:
            self.blocked.pop(call, None)
            return
        conn = self.h2
        try:
            while pending:
                window = conn.local_flow_control_window(call.id)
                size = min(len(pending), window, conn.max_outbound_frame_size)
                if size <= 0:
                    call.pending = pending
                    self.blocked[call] = None
                    return
                conn.send_data(call.id, pending[:size].tobytes())
                pending = pending[size:]
            call.pending = None
            self.blocked.pop(call, None)
            conn.send_headers(call.id, status_trailers(Status.OK), end_stream=True)
        except h2.exceptions.H2Error:
            pass  # the stream is gone (reset or closed): nothing more to say on it
        self._close_call(call)

    def _refuse(self, stream_id: int, status: Status, message: str) -> None:
        """Answers a request with a trailers-only response (and stops its upload, if any)."""
        try:
            self.h2.send_headers(stream_id, trailers_only(status, message), end_stream=True)
            h2_stream = self.h2.streams.get(stream_id)
            if h2_stream is not None and not h2_stream.closed:
                self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
        except h2.exceptions.H2Error:
            return

    def _fail(self, call: _Call, status: Status, message: str) -> None:
        if self.calls.get(call.id) is not call or self.closing:
            return
        if call.pending is not None:
            # Part of the answer is out: trailers now would truncate it, so cancel instead.
            with contextlib.suppress(h2.exceptions.H2Error):
                self.h2.reset_stream(call.id, h2.errors.ErrorCodes.CANCEL)
        else:
            self._refuse(call.id, status, message)
        self._close_call(call)

    def _close_call(self, call: _Call) -> None:
        if self.calls.pop(call.id, None) is None:
            return
        self._release_request(call)
        call.body = None
        call.pending = None
        self.blocked.pop(call, None)
        if call.deadline is not None:
            call.deadline.cancel()
            call.deadline = None
        task, call.task = call.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if not self.calls:
            self.idle.set()
            if self.draining:
                self._emit()
                self._abort()

    def _release_request(self, call: _Call) -> None:
        self.request_bytes -= call.buffered
        call.buffered = 0

    # -- timers ------------------------------------------------------------------------------

    def _handshake_late(self) -> None:
        self._handshake_timer = None
        log.info("grpc.handshake_timeout")
        self._goaway_and_close(h2.errors.ErrorCodes.NO_ERROR)

    def _keepalive(self) -> None:
        if self.closing:
            return
        try:
            self.h2.ping(_KEEPALIVE_PING)
        except h2.exceptions.H2Error:
            self._keepalive_timer = None
            return
        self._emit()
        self._ping_outstanding = True
        self._keepalive_timer = self.loop.call_later(
            self.server.keepalive_timeout, self._keepalive_unanswered
        )

    def _ping_acked(self, event: h2.events.PingAckReceived) -> None:
        if event.ping_data == _KEEPALIVE_PING and self._ping_outstanding:
            self._ping_outstanding = False
            if self._keepalive_timer is not None:
                self._keepalive_timer.cancel()
            self._keepalive_timer = self.loop.call_later(
                self.server.keepalive_interval, self._keepalive
            )

    def _keepalive_unanswered(self) -> None:
        self._keepalive_timer = None
        log.info("grpc.keepalive_timeout", calls=len(self.calls))
        self._abort()  # the peer is gone or does not read: a GOAWAY would not be read either

    def _cancel_timers(self) -> None:
        for timer in (self._handshake_timer, self._keepalive_timer):
            if timer is not None:
                timer.cancel()
        self._handshake_timer = self._keepalive_timer = None

    # -- output ------------------------------------------------------------------------------

    def _emit(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self._out.append(data)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(out)

    def _abort(self) -> None:
        """Ends every call and closes once what is queued is written."""
        if self.closing:
            return
        self.closing = True
        self._cancel_timers()
        for call in list(self.calls.values()):
            self._close_call(call)
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def _goaway_and_close(self, code: h2.errors.ErrorCodes) -> None:
        with contextlib.suppress(h2.exceptions.H2Error):
            self.h2.close_connection(error_code=code)
        self._emit()
        self._abort()

    def _calm(self) -> None:
        self._goaway_and_close(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)

    def drain(self) -> None:
        """GOAWAY(NO_ERROR): calls in flight finish, new ones are refused, then close.

        The frame is written directly: telling jh2 would close its state machine, and the
        answers still owed could not be sent.
        """
        if self.closing or self.draining:
            return
        self.draining = True
        last = self.h2.highest_inbound_stream_id
        self._flush()
        if self.transport is not None:
            self.transport.write(_GOAWAY_HEADER + last.to_bytes(4, "big") + bytes(4))
        if not self.calls:
            self._abort()


class UnaryServer:
    """Listeners sharing one table of unary methods."""

    def __init__(
        self,
        methods: Iterable[UnaryMethod],
        *,
        max_concurrent_streams: int = MAX_CONCURRENT_STREAMS,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
    ) -> None:
        self.methods = {method.path.encode(): method for method in methods}
        self.max_concurrent_streams = max_concurrent_streams
        self.handshake_timeout = handshake_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[_Connection] = set()
        self._servers: list[asyncio.Server] = []

    async def listen(self, host: str, port: int, **kwargs: Any) -> int:
        """Starts a listener; returns the port it bound."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(self), host, port, **kwargs)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def stop(self, grace: float) -> None:
        """Stops listening, lets calls in flight finish for up to ``grace`` s, then closes."""
        for server in self._servers:
            server.close()
        connections = list(self.connections)
        for conn in connections:
            conn.drain()
        waits = [conn.idle.wait() for conn in connections if not conn.closing]
        if waits:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*waits)
        for conn in list(self.connections):
            conn._abort()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
