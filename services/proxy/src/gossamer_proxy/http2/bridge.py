"""HTTP/2 proxying: a server connection to the client bridged to a client connection upstream.

Both ends are ``h2`` state machines; this module only moves events between them. Each client
stream is paired with one upstream stream. Flow control is end to end: DATA received from one
side is acknowledged (its window reopened) only once the other side's window has let it
through, so the proxy buffers at most one window per stream and a slow reader throttles its
writer. Trailers (and so gRPC status) pass through unchanged; RST_STREAM on either side resets
the paired stream; a GOAWAY from upstream refuses the streams it did not process
(REFUSED_STREAM, which clients retry) and moves new streams to a fresh upstream connection.

Every write path has backpressure (RFC 9113 §10.5): while a peer's transport is over its
write high-water mark the proxy stops reading that peer and stops moving DATA toward it
(the data waits unacknowledged, so flow control holds the sender back). The ACKs and
answers owed meanwhile are counted, and a client that resets streams by the thousand is
stopped, both by :mod:`gossamer_common.h2flood` with ``GOAWAY(ENHANCE_YOUR_CALM)``. A new
stream starts upstream only once the read that opened it is handled, so a HEADERS +
RST_STREAM pair costs the upstream nothing, and one connect at a time serves every waiting stream.

Outbound with discovery, every stream is routed, balanced, timed out and retried on its own
(:mod:`.balanced`, a subclass of :class:`H2Server` that the listener gets for those
connections), over upstream connections pooled per endpoint (:mod:`.upstream_pool`).
Inbound and fixed-target outbound connections keep this module's single-upstream path,
where every stream rides one upstream connection; a stream is counted in the request
metrics under the listener's labels there. That upstream connection outlives its client
connection: once the client is gone and no stream is left on it, the next client
connection to the same endpoint takes it up (:mod:`.idle_upstreams`), so a client that
reconnects costs no new connect or mTLS handshake.

Inbound, a stream marked ``l5d-orig-proto`` is an HTTP/1 request that a client proxy
upgraded to HTTP/2: it goes to the app over HTTP/1.1 instead (:mod:`.downgrade`), while the
connection's other streams keep the HTTP/2 upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, cast

import structlog
from gossamer_common.h2flood import FloodGuard

from ..config import Endpoint
from ..context import ListenerContext
from ..errors import ProxyError, ProxyErrorKind, grpc_error_headers, h2_error_headers
from ..h2codec import h2, new_connection, release, take_answers_owed
from ..halfclose import can_stay_half_open
from ..http1.headers import HeaderError, filter_trailers
from ..inbound_authz import InboundPeer
from ..mesh.l5d_headers import (
    DIRECTIVES,
    ORIG_PROTO,
    REQUIRE_ID,
    OrigProto,
    parse_orig_proto,
    required_identity_error,
)
from ..mesh.tls_contexts import verified_server_identity
from ..metrics import HttpTargetStats, TargetLabels, TcpStats
from ..observe import ConnectionFacts, ObservedRequest, connection_facts, content_length_of
from ..outbound.discovery import TargetHandle
from ..outbound.redispatch import may_redispatch
from .authority import AuthorityError, repeats_host, settle_authority
from .downgrade import H1Downgrade
from .orig_proto import downgrade_request

if TYPE_CHECKING:
    from ..mesh.stream_retry import StreamRetry

__all__ = ["H2Server"]

_log = structlog.get_logger("gossamer.proxy")

Headers = list[tuple[bytes, bytes]]

_STRIP_REQUEST = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
     b"l5d-dst-override", b"l5d-require-id"}
)  # fmt: skip
_STRIP_INBOUND = _STRIP_REQUEST | {b"l5d-client-id"}
#: Outbound, the ``l5d-*`` request directives are never forwarded (a route without discovery
#: has no settings for them to override).
_STRIP_OUTBOUND = _STRIP_REQUEST | DIRECTIVES
_WINDOW = 1 << 20  # per-stream receive window we advertise


#: Queued DATA shorter than this joins the chunk before it (see :meth:`_Flow.add`).
_COALESCE_BELOW = 16384


class _Flow:
    """Bytes waiting for the receiving side's window, plus what ends the stream after them.

    ``pending`` holds ``(data, flow-controlled length)`` chunks, oldest first. A list, not a
    deque: it is empty nearly always (DATA moves on as it arrives) and an empty deque costs
    ~700 bytes, two per stream in flight. Chunks join while they are small, so a window's
    worth of 1-byte DATA frames is ~64 chunks, not a million tuples (~100 bytes each): the
    queue's memory stays near the bytes it holds, and taking from its front stays cheap.
    """

    __slots__ = ("ended", "ended_on_headers", "pending", "trailers")

    def __init__(self) -> None:
        self.pending: list[tuple[bytes | bytearray, int]] = []
        self.ended = False
        self.ended_on_headers = False
        self.trailers: Headers | None = None

    def add(self, data: bytes, flow_len: int) -> None:
        """Queue ``data`` (``flow_len`` to acknowledge once it is sent), joining small chunks.

        A joined chunk is a bytearray that grows in place (no copy of what it holds); it
        only ever sits last in the queue, so nothing that took a chunk sees it change.
        """
        pending = self.pending
        if pending:
            last, last_len = pending[-1]
            if len(last) + len(data) < _COALESCE_BELOW:
                if isinstance(last, bytearray):
                    last += data
                    pending[-1] = (last, last_len + flow_len)
                else:
                    pending[-1] = (bytearray(last) + data, last_len + flow_len)
                return
        pending.append((data, flow_len))


class _Pair:
    __slots__ = (
        "authority",
        "down_id",
        "downgrade",
        "grpc",
        "grpc_status",
        "observed",
        "request_ended",
        "request_headers",
        "require_id",
        "response_started",
        "retry",
        "started_at",
        "stats",
        "status",
        "to_down",
        "to_up",
        "up_id",
        "upstream",
    )

    def __init__(self, down_id: int, headers: Headers) -> None:
        self.down_id = down_id
        self.up_id = 0
        self.upstream: _H2Upstream | None = None
        self.request_headers = headers
        #: Outbound ``l5d-require-id``: the server identity the connection must have.
        self.require_id: str | None = None
        self.request_ended = False
        self.to_up = _Flow()
        self.to_down = _Flow()
        self.response_started = False
        self.grpc = False
        self.grpc_status: int | None = None
        self.status = 0
        self.started_at = 0.0
        self.stats: HttpTargetStats | None = None
        #: The ``authority`` metric label, kept until the stream is counted.
        self.authority = ""
        #: Outbound routes that retry keep the request for replay here.
        self.retry: StreamRetry | None = None
        #: Inbound ``l5d-orig-proto`` streams go to the app over HTTP/1.1 through this.
        self.downgrade: H1Downgrade | None = None
        #: Request observers' record (:mod:`..observe`); ``None`` when nobody observes.
        self.observed: ObservedRequest | None = None


def _config(client_side: bool) -> h2.config.H2Configuration:
    # Inbound headers are validated once, on arrival; what is forwarded is then known good,
    # so outbound validation and normalisation (a third of h2's per-request cost) are off.
    return h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_inbound_headers=True,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        logger=None,
    )


def _set_windows(conn: h2.connection.H2Connection) -> None:
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW})
    conn.increment_flow_control_window(_WINDOW * 4)


class H2Server(asyncio.Protocol):
    """One client HTTP/2 connection, bridged to (normally) one upstream connection.

    Outbound with discovery, the listener gets a
    :class:`~gossamer_proxy.http2.balanced.BalancedH2Server` instead, which routes, balances,
    times out and retries each stream; everything else keeps this single-upstream path.
    """

    _pair_class: type[_Pair] = _Pair
    #: Request headers an outbound connection never forwards.
    _outbound_strip: frozenset[bytes] = _STRIP_OUTBOUND

    def __init__(
        self,
        ctx: ListenerContext,
        target: Endpoint,
        labels: TargetLabels,
        tcp: TcpStats,
        peer: InboundPeer | None = None,
    ) -> None:
        self.ctx = ctx
        self.peer = peer
        client_id = peer.client_id if peer is not None else None
        self._client_id_header: Headers = (
            [(b"l5d-client-id", client_id.encode())] if client_id else []
        )
        self.target = target
        self.labels = labels
        self.tcp = tcp
        self.loop = asyncio.get_running_loop()
        self.conn = new_connection(_config(client_side=False))
        self.transport: asyncio.Transport | None = None
        self.pairs: dict[int, _Pair] = {}
        #: Request observers: this connection's facts, built on first need.
        self._facts: ConnectionFacts | None = None
        self.upstream: _H2Upstream | None = None
        self._connecting: list[_Pair] = []
        #: Whether a connect for ``_connecting`` is under way (one at a time, however many
        #: streams wait or are reset meanwhile).
        self._connect_pending = False
        #: Streams that arrived in the read being handled; they start once the whole read
        #: is handled, so a stream reset in the same read never reaches the upstream.
        #: (With the ``l5d-orig-proto`` an upgraded HTTP/1 request carries, to go to the app
        #: as HTTP/1.1.)
        self._starting: list[tuple[_Pair, OrigProto | None]] = []
        #: Control frames and client resets counted against the flood limits.
        self._guard = FloodGuard()
        self._calm = False
        #: A connection-level WINDOW_UPDATE arrived in the read being handled.
        self._pump_all = False
        self._closed = False
        self._goaway = False
        self._reads = 0
        self._seen = 0
        self._quiet_since = self.loop.time()
        self._strip = _STRIP_INBOUND if ctx.inbound else self._outbound_strip
        self._handle: TargetHandle | None = None
        #: Outbound with discovery: streams are counted once their endpoint is known.
        self._count_on_upstream = ctx.discovery is not None and not ctx.inbound

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, transport: asyncio.Transport, initial: bytes, *, eof: bool = False) -> None:
        self.transport = transport
        transport.set_protocol(self)
        self.ctx.connections.add(self)
        self.conn.initiate_connection()
        _set_windows(self.conn)
        self._flush_out()
        if initial:
            self.data_received(initial)
        if eof:
            self.eof_received()
            return
        if not self._guard.writes_backed_up and not self._calm:
            transport.resume_reading()

    def eof_received(self) -> bool:
        """The client sent everything it will: finish the streams in flight, then close.

        Streams whose request never ended cannot complete; they are cancelled upstream. Over
        TLS the connection closes now (see halfclose), so no stream can be answered: all of
        them are cancelled.
        """
        self._goaway = True
        half_open = can_stay_half_open(self.transport)
        for pair in list(self.pairs.values()):
            if not half_open or not pair.request_ended:
                self.pairs.pop(pair.down_id, None)
                self._client_reset(pair, h2.errors.ErrorCodes.CANCEL)
        self._maybe_finish()
        return half_open

    def _maybe_finish(self) -> None:
        if self._goaway and not self.pairs:
            self._flush_out()
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        try:
            self._forget_streams(exc)
        finally:
            release(self.conn)

    def _forget_streams(self, exc: Exception | None) -> None:
        self.ctx.connections.discard(self)
        if self._handle is not None:
            self._handle.close()
        for pair in list(self.pairs.values()):
            if pair.observed is not None:
                pair.observed.end(self.loop.time(), error="connection closed")
            if pair.upstream is not None:
                pair.upstream.reset(pair, h2.errors.ErrorCodes.CANCEL)
            if pair.downgrade is not None:
                pair.downgrade.cancel()
        self.pairs.clear()
        up = self.upstream
        if up is not None:
            self.upstream = None
            up.flush_out()
            if not self._keep_idle(up):
                up.close_when_idle()
        self.tcp.close(getattr(exc, "errno", 0) or 0 if exc else 0)

    def _keep_idle(self, up: _H2Upstream) -> bool:
        """Leave ``up``, now without streams, to the listener's next client connection."""
        ctx = self.ctx
        if ctx.draining or up.server is not self:
            return False
        endpoint = up.endpoint
        if endpoint is None:
            return False
        pool = ctx.pool
        meshed = ctx.connector.meshed(endpoint)
        timeout = pool.mesh_idle_timeout if meshed else pool.idle_timeout
        # ``up.server`` stays this (closed) connection until another takes ``up`` up: all an
        # idle upstream connection asks of it is a flush, which a closed one skips.
        return ctx.h2_idle.keep((endpoint, up.labels), up, self.loop.time(), timeout)

    def is_idle(self) -> bool:
        return not self.pairs

    def drain(self) -> None:
        if not self._goaway and not self._closed:
            self._goaway = True
            self.conn.close_connection(last_stream_id=self.conn.highest_inbound_stream_id)
            self._flush_out()
        if not self.pairs:
            self._close()

    def tick(self, now: float) -> None:
        if self._reads != self._seen:
            self._seen = self._reads
            self._quiet_since = now
        elif not self.pairs and now - self._quiet_since >= self.ctx.limits.idle_timeout:
            transport = self.transport
            if transport is not None and (self._guard.writes_backed_up or transport.is_closing()):
                # The client reads nothing (or not the GOAWAY of a tick ago): a graceful
                # close would never end.
                transport.abort()
            else:
                self.drain()

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _flush_out(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.tcp.written.value += len(data)
            self.transport.write(data)

    # -- client → proxy ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._reads += 1
        self.tcp.read.value += len(data)
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush_out()  # h2 queued the GOAWAY that explains the error
            self._close()
            return
        owed = take_answers_owed(self.conn)  # RST_STREAMs for frames on forgotten streams
        if owed and self._guard.control_frame(owed):
            _log.info("h2_answer_flood", pending=self._guard.pending_control_frames)
            self._calm = True
            self._enhance_your_calm()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived) and repeats_host(event.headers):
                self.conn.close_connection(h2.errors.ErrorCodes.PROTOCOL_ERROR)
                self._flush_out()  # a connection error, as h2 itself treats two host fields
                self._close()
                return
            try:
                self._on_event(event)
            except h2.exceptions.ProtocolError as exc:
                self._stream_error(getattr(event, "stream_id", 0), exc)
            if self._calm:
                self._enhance_your_calm()
                return
        if self._pump_all:
            self._pump_all = False
            for pair in list(self.pairs.values()):
                self.pump(pair)
        if self._starting:
            self._start_streams()
        self._flush_out()
        self._flush_upstreams()

    def _stream_error(self, sid: int, exc: h2.exceptions.ProtocolError) -> None:
        """A bridging step the peer's state no longer allows: drop that stream only."""
        _log.debug("h2_stream_error", stream_id=sid, error=str(exc))
        pair = self.pairs.get(sid) if sid else None
        if pair is not None:
            if pair.upstream is not None:
                pair.upstream.reset(pair, h2.errors.ErrorCodes.CANCEL)
            if pair.downgrade is not None:
                pair.downgrade.cancel()
            self.reset_stream(pair, h2.errors.ErrorCodes.INTERNAL_ERROR, refused=True)

    def _start_streams(self) -> None:
        """Forward the streams of the read just handled that are still open."""
        starting, self._starting = self._starting, []
        pairs = self.pairs
        for pair, orig in starting:
            if pairs.get(pair.down_id) is pair:
                try:
                    if orig is not None:
                        self._downgrade(pair, orig)
                    else:
                        self._forward(pair)
                except h2.exceptions.ProtocolError as exc:
                    self._stream_error(pair.down_id, exc)

    def _enhance_your_calm(self) -> None:
        """The client passed a flood limit: GOAWAY(ENHANCE_YOUR_CALM), cancel its streams, close.

        A client that does not read (writes backed up) would never take the GOAWAY, so its
        connection is aborted rather than left to drain.
        """
        self._goaway = True
        self._starting = []
        for pair in list(self.pairs.values()):
            self.pairs.pop(pair.down_id, None)
            self._client_reset(pair, h2.errors.ErrorCodes.CANCEL)
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.close_connection(
                error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM,
                last_stream_id=self.conn.highest_inbound_stream_id,
            )
        self._flush_out()
        self._flush_upstreams()
        transport = self.transport
        if transport is None:
            return
        if self._guard.writes_backed_up:
            transport.abort()
        else:
            transport.close()

    # -- backpressure toward the client ------------------------------------------------------

    def pause_writing(self) -> None:
        """The client is not reading: stop reading it, and stop moving response data.

        Response DATA then waits in its stream's flow (unacknowledged upstream, so the
        upstream's window throttles it), and no new frame from the client can make the
        proxy owe it anything more.
        """
        self._guard.backed_up()
        if self.transport is not None and not self._closed:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._guard.drained()
        if self._closed or self._calm:
            return
        for pair in list(self.pairs.values()):
            flow = pair.to_down
            if flow.pending or flow.ended or flow.trailers is not None:
                self.pump(pair)
        self._flush_out()
        self._flush_upstreams()
        if self.transport is not None and not self._guard.writes_backed_up:
            self.transport.resume_reading()

    def _flush_upstreams(self) -> None:
        if self.upstream is not None:
            self.upstream.flush_out()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._on_request(event)
        elif isinstance(event, h2.events.DataReceived):
            pair = self.pairs.get(event.stream_id)
            if pair is None or not event.data:
                # Nothing to forward (a stream gone, or a frame empty but for padding): its
                # window reopens now, and nothing is queued for it.
                if event.flow_controlled_length:
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                return
            pair.to_up.add(event.data, event.flow_controlled_length)
            if pair.retry is not None:
                pair.retry.body.feed(event.data)
            if event.stream_ended is not None:
                pass  # the StreamEnded that follows moves it, with the end
            elif pair.upstream is not None:
                pair.upstream.pump(pair)
            elif pair.downgrade is not None:
                pair.downgrade.pump()
        elif isinstance(event, h2.events.TrailersReceived):
            pair = self.pairs.get(event.stream_id)
            if pair is not None:
                pair.to_up.trailers = filter_trailers(list(event.headers))
                if pair.retry is not None:
                    pair.retry.trailers = pair.to_up.trailers
                if pair.downgrade is not None:
                    pair.downgrade.pump()
        elif isinstance(event, h2.events.StreamEnded):
            pair = self.pairs.get(event.stream_id)
            if pair is not None and not pair.to_up.ended_on_headers:
                pair.to_up.ended = True
                pair.request_ended = True
                if pair.retry is not None:
                    pair.retry.body.end()
                if pair.upstream is not None:
                    pair.upstream.pump(pair)
                elif pair.downgrade is not None:
                    pair.downgrade.pump()
        elif isinstance(event, h2.events.StreamReset):
            pair = self.pairs.pop(event.stream_id, None)
            if pair is not None:
                self._client_reset(pair, event.error_code or h2.errors.ErrorCodes.CANCEL)
                if self._guard.client_reset(self.loop.time()):
                    _log.info("h2_reset_flood", streams=event.stream_id)
                    self._calm = True
                self._maybe_finish()
        elif isinstance(event, (h2.events.PingReceived, h2.events.RemoteSettingsChanged)):
            if self._guard.control_frame():
                _log.info("h2_control_frame_flood", pending=self._guard.pending_control_frames)
                self._calm = True
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id == 0:
                self._pump_all = True  # once per read, however many updates it holds
            else:
                pair = self.pairs.get(event.stream_id)
                if pair is not None:
                    self.pump(pair)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._goaway = True
            if not self.pairs:
                self._close()

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        headers: Headers = []
        grpc = False
        strip = self._strip
        method = path = b""
        require_id: bytes | None = None
        orig_proto: bytes | None = None
        for name, value in event.headers:
            if name in strip:
                if name == REQUIRE_ID:
                    require_id = value
                continue
            if name == ORIG_PROTO and self.ctx.inbound:
                orig_proto = value
                continue
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            if name == b"content-type" and value.startswith(b"application/grpc"):
                grpc = True
            headers.append((name, value))
        malformed = False
        try:
            authority, headers = settle_authority(headers)  # :authority wins over host
        except AuthorityError:
            malformed = True  # answered with 400 below, once the stream is tracked
        headers += self._client_id_header
        pair = self._pair_class(sid, headers)
        if require_id is not None and not self.ctx.inbound:
            pair.require_id = require_id.decode("latin-1").strip() or None  # empty: none
        pair.grpc = grpc
        pair.started_at = self.loop.time()
        authority_text = authority.decode("latin-1") if authority else ""
        if authority_text and ":" not in authority_text.rsplit("]", 1)[-1]:
            authority_text = f"{authority_text}:{self.target.port}"
        pair.authority = authority_text
        observers = self.ctx.observers
        if observers is not None:
            observed = pair.observed = observers.begin_h2(
                self._connection_facts(), sid, event.headers, pair.started_at
            )
            if observed is not None and observed.added_headers:
                headers[:] = observed.forward_headers(headers)  # the list the pair forwards
        if not self._count_on_upstream:
            self.count(pair, self.labels)
        if event.stream_ended is not None:
            # END_STREAM came on HEADERS; h2 reports it again as StreamEnded, ignored below.
            pair.to_up.ended = True
            pair.to_up.ended_on_headers = True
            pair.request_ended = True
        self.pairs[sid] = pair
        if self._goaway or self.ctx.draining:
            self._answer_now(pair, ProxyErrorKind.SHUTTING_DOWN)
            return
        if malformed:
            self._answer_now(pair, ProxyErrorKind.BAD_REQUEST, "conflicting host fields")
            return
        if self.peer is not None:
            denied = self.peer.check_http(method, path, authority, headers, pair.started_at)
            if denied is not None:
                self._answer_now(pair, denied.kind, denied.detail)
                return
        orig: OrigProto | None = None
        if orig_proto is not None:
            orig = parse_orig_proto(orig_proto)
            if orig is None:
                _log.info("orig_proto_unknown", value=orig_proto.decode("latin-1"))
        self._starting.append((pair, orig))

    def _answer_now(self, pair: _Pair, kind: ProxyErrorKind, detail: str | None = None) -> None:
        """Answer a new stream without forwarding it; the answer counts as a frame owed."""
        self.respond_error(pair, kind, detail)
        if self._guard.control_frame():
            _log.info("h2_answer_flood", pending=self._guard.pending_control_frames)
            self._calm = True

    def _downgrade(self, pair: _Pair, orig: OrigProto) -> None:
        """An HTTP/1 request a client proxy upgraded: send it to the app as HTTP/1.1."""
        try:
            request = downgrade_request(
                pair.request_headers,
                orig,
                # Whether it ended with its headers: DATA and END_STREAM of the same read
                # (the stream starts once the read is handled) still make a body.
                ended=pair.to_up.ended_on_headers,
                default_host=str(self.target).encode(),
            )
        except HeaderError as exc:
            self.respond_error(pair, ProxyErrorKind.BAD_REQUEST, str(exc))
            return
        try:
            endpoint = self._app_endpoint()
        except ProxyError as exc:
            self.respond_error(pair, exc.kind, exc.detail)
            return
        pair.downgrade = H1Downgrade(self, pair, request, endpoint)
        pair.downgrade.start()

    def _client_reset(self, pair: _Pair, code: int) -> None:
        """The client gave up on ``pair`` (already forgotten): cancel its upstream stream."""
        if pair.observed is not None:
            pair.observed.end(self.loop.time(), reset_code=code, error="client reset")
        if pair.downgrade is not None:
            pair.downgrade.cancel()
        elif pair.upstream is not None:
            pair.upstream.reset(pair, code)
            pair.upstream.flush_out()
        elif pair in self._connecting:
            self._connecting.remove(pair)

    def _forward(self, pair: _Pair) -> None:
        """Send a new stream upstream: over the connection, or once it is made."""
        up = self.upstream
        if up is not None and up.usable():
            up.open_stream(pair)
            return
        if up is None and not self._connect_pending:
            up = self._idle_upstream()
            if up is not None:
                self.upstream = up
                up.open_stream(pair)
                return
        self._connecting.append(pair)
        if not self._connect_pending:
            self._connect_pending = True
            self.ctx.spawn(self._connect())

    def _connection_facts(self) -> ConnectionFacts:
        facts = self._facts
        if facts is None:
            client_id = self.peer.client_id if self.peer is not None else None
            target = (self.target.host, self.target.port)
            facts = connection_facts(self.ctx.direction, self.transport, target, client_id)
            self._facts = facts
        return facts

    def observe_forwarded(self, observed: ObservedRequest, up: _H2Upstream) -> None:
        """``observed`` went upstream over ``up`` (outbound: to the endpoint it labels)."""
        now = self.loop.time()
        if self.ctx.inbound:
            observed.forwarded(now)
            return
        labels = up.labels
        observed.forwarded(
            now,
            dst_addr=(labels.target_ip, labels.target_port),
            server_id=up.server_identity(),
            dst_labels=labels.dst,
        )

    def count(self, pair: _Pair, labels: TargetLabels) -> None:
        """Count ``pair`` as a request to ``labels`` (once)."""
        if pair.stats is None:
            pair.stats = self.ctx.metrics.http(labels, pair.authority)
            pair.stats.requests.value += 1

    async def _connect(self) -> None:
        try:
            await self._connect_upstream()
        finally:
            self._connect_pending = False

    def _idle_upstream(self) -> _H2Upstream | None:
        """An upstream connection an earlier client connection left (now this one's)."""
        try:
            endpoint = self._app_endpoint()
        except ProxyError:
            return None  # the connect path answers the error
        up = self.ctx.h2_idle.take((endpoint, self.labels))
        if up is not None:
            up.server = self
        return up

    async def _connect_upstream(self) -> None:
        try:
            up = await self._open_upstream(self._app_endpoint())
        except ProxyError as exc:
            waiting, self._connecting = self._connecting, []
            for pair in waiting:
                if self.pairs.get(pair.down_id) is pair:
                    self.respond_error(pair, exc.kind, exc.detail)
            self._flush_out()
            return
        waiting, self._connecting = self._connecting, []
        if self._closed:
            up.close_when_idle()
            return
        old = self.upstream
        self.upstream = up
        if old is not None:
            old.close_when_idle()
        for pair in waiting:
            if self.pairs.get(pair.down_id) is pair:
                up.open_stream(pair)
        up.flush_out()
        self._flush_out()

    async def _open_upstream(self, endpoint: Endpoint) -> _H2Upstream:
        """Connect to ``endpoint``; a failed connect is tried again while streams wait for it.

        A connect that failed carried none of the streams, so trying again is always safe;
        the balanced path redispatches the same way, and with the same bound
        (:func:`~gossamer_proxy.outbound.redispatch.may_redispatch`). One connect that timed
        out (a peer busy with a burst of handshakes) thus fails no stream on its own.
        """
        attempts = 0
        while True:
            attempts += 1
            factory = self._upstream_for(self.labels)
            factory.endpoint = endpoint  # so that the connection may outlive this client
            try:
                _, up = await self.ctx.connector.open(endpoint, factory)
            except ProxyError as exc:
                factory.abandon()
                if (
                    self._closed
                    or not self._streams_wait()
                    or not may_redispatch(exc.kind, attempts)
                ):
                    raise
                _log.debug(
                    "connect_failed_retrying",
                    endpoint=str(endpoint),
                    error=str(exc),
                    attempt=attempts,
                )
                continue
            except BaseException:
                factory.abandon()
                raise
            return up

    def _streams_wait(self) -> bool:
        """Whether a stream still waits for the upstream connect."""
        return any(self.pairs.get(pair.down_id) is pair for pair in self._connecting)

    def _app_endpoint(self) -> Endpoint:
        """Where this connection's requests go without discovery (may raise ProxyError)."""
        ctx = self.ctx
        if ctx.fixed_target is not None:
            return ctx.fixed_target
        if ctx.inbound:
            return self.target  # the pod address the accept step checked
        return ctx.resolver.resolve(self.target, None)[0]

    def _upstream_for(self, labels: TargetLabels) -> _UpstreamFactory:
        """A protocol factory for a connection to the endpoint ``labels`` describe."""
        return _UpstreamFactory(self, labels)

    # -- proxy → client ----------------------------------------------------------------------

    def pump(self, pair: _Pair) -> None:
        """Send what the client's window allows of ``pair``'s response.

        Nothing moves while the client's writes are backed up; :meth:`resume_writing` pumps.
        """
        if self._guard.writes_backed_up:
            return
        up = pair.upstream
        try:
            done = _pump(self.conn, pair.down_id, pair.to_down, up.conn if up else None, pair.up_id)
        except h2.exceptions.StreamClosedError:
            self.pairs.pop(pair.down_id, None)
            self._client_reset(pair, h2.errors.ErrorCodes.CANCEL)
            self._maybe_finish()
            return
        if done:
            self._complete(pair)
        elif pair.downgrade is not None:
            pair.downgrade.response_drained()

    def response_headers(self, pair: _Pair, headers: Headers, end: bool) -> None:
        status = 0
        for name, value in headers:
            if name == b":status":
                status = int(value)
            elif name == b"grpc-status":
                pair.grpc_status = _int_or_none(value)
        if 100 <= status < 200:
            self._send_headers(pair, headers, end_stream=False)
            return
        pair.status = status
        pair.response_started = True
        if pair.observed is not None:
            pair.observed.response(status, headers, self.loop.time(), content_length_of(headers))
        if pair.stats is not None:
            pair.stats.observe_latency(status, (self.loop.time() - pair.started_at) * 1000.0)
        self._send_headers(pair, headers, end_stream=end)
        if end:
            self._complete(pair)

    def _send_headers(self, pair: _Pair, headers: Headers, *, end_stream: bool) -> None:
        try:
            self.conn.send_headers(pair.down_id, headers, end_stream=end_stream)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            # The stream or the whole connection is gone (after the client's GOAWAY, h2
            # sends nothing more): forget the stream, and close once no stream is left.
            self.pairs.pop(pair.down_id, None)
            self._client_reset(pair, h2.errors.ErrorCodes.CANCEL)
            self._maybe_finish()

    def _complete(self, pair: _Pair) -> None:
        if self.pairs.pop(pair.down_id, None) is None:
            return
        if pair.stats is not None:
            pair.stats.response(pair.status, pair.grpc_status)
        if pair.observed is not None:
            pair.observed.end(self.loop.time(), grpc_status=pair.grpc_status)
        self._maybe_finish()

    def upstream_lost(self, up: _H2Upstream, pairs: list[_Pair]) -> None:
        """``up`` closed with ``pairs`` in flight: error or reset each toward the client."""
        for pair in pairs:
            if pair.response_started:
                self.reset_stream(pair, h2.errors.ErrorCodes.INTERNAL_ERROR)
            else:
                self.pairs.pop(pair.down_id, None)
                self.pairs[pair.down_id] = pair
                self.respond_error(pair, ProxyErrorKind.UPSTREAM_CLOSED)
        if self.upstream is up:
            self.upstream = None
        self._flush_out()

    def reset_stream(self, pair: _Pair, code: int, *, refused: bool = False) -> None:
        if self.pairs.pop(pair.down_id, None) is None:
            return
        if not pair.response_started and not refused:
            self.respond_error(pair, ProxyErrorKind.UPSTREAM_RESET)
            return
        self.count(pair, pair.upstream.labels if pair.upstream is not None else self.labels)
        if pair.stats is not None:
            pair.stats.response(pair.status, pair.grpc_status, "stream reset")
        if pair.observed is not None:
            pair.observed.end(
                self.loop.time(), grpc_status=pair.grpc_status, reset_code=code, error="RESET"
            )
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.conn.reset_stream(pair.down_id, code)
        self._maybe_finish()

    def identity_refused(self, pair: _Pair, detail: str) -> None:
        """``pair`` requires a server identity its upstream connection does not have."""
        self.respond_error(pair, ProxyErrorKind.IDENTITY_MISMATCH, detail)

    def respond_error(self, pair: _Pair, kind: ProxyErrorKind, detail: str | None = None) -> None:
        """Answer a stream with Linkerd's synthesized error (gRPC status for gRPC)."""
        self.pairs.pop(pair.down_id, None)
        self.count(pair, self.labels)
        if pair.grpc:
            headers = grpc_error_headers(kind, detail)
            status, grpc_status = 200, int(kind.grpc_status)
        else:
            headers = h2_error_headers(kind, detail)
            status, grpc_status = kind.status, None
        if pair.observed is not None:
            pair.observed.answered(status, kind.name, self.loop.time(), grpc_status=grpc_status)
        if pair.stats is not None:
            pair.stats.observe_latency(status, (self.loop.time() - pair.started_at) * 1000.0)
            pair.stats.response(status, grpc_status, kind.name.lower())
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.conn.send_headers(
                pair.down_id, [(n.encode(), v.encode()) for n, v in headers], end_stream=True
            )
        self._maybe_finish()


def _has_valid_status(headers: Headers) -> bool:
    """One ``:status`` of exactly three ASCII digits, 100..599 (h2 checks presence only)."""
    statuses = [value for name, value in headers if name == b":status"]
    if len(statuses) != 1:
        return False
    value = statuses[0]
    return len(value) == 3 and value.isascii() and value.isdigit() and 100 <= int(value) <= 599


def _int_or_none(value: bytes) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def _pump(
    dst: h2.connection.H2Connection,
    dst_id: int,
    flow: _Flow,
    src: h2.connection.H2Connection | None,
    src_id: int,
) -> bool:
    """Move ``flow`` into ``dst`` within its windows; returns True when the stream ended.

    Data is acknowledged on ``src`` only once sent, which is what carries backpressure.
    """
    pending = flow.pending
    while pending:
        data, flow_len = pending[0]
        window = min(dst.local_flow_control_window(dst_id), dst.max_outbound_frame_size)
        if window <= 0:
            return False
        if not isinstance(data, bytes):
            data = bytes(data)  # a joined chunk (_Flow.add)
        if len(data) > window:
            dst.send_data(dst_id, data[:window])
            pending[0] = (data[window:], flow_len)
            continue
        # The last DATA of a stream that ends without trailers carries END_STREAM itself,
        # rather than an empty DATA frame after it.
        last = flow.ended and flow.trailers is None and len(pending) == 1
        dst.send_data(dst_id, data, end_stream=last)
        del pending[0]
        if src is not None and flow_len:
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                src.acknowledge_received_data(flow_len, src_id)
        if last:
            flow.ended = False
            return True
    if flow.trailers is not None:
        if flow.trailers:
            dst.send_headers(dst_id, flow.trailers, end_stream=True)
        else:  # every trailer was filtered away: the stream just ends
            dst.end_stream(dst_id)
        flow.trailers = None
        flow.ended = False
        return True
    if flow.ended:
        dst.end_stream(dst_id)
        flow.ended = False
        return True
    return False


class _UpstreamFactory:
    """Makes the protocol of one upstream connect, and lets go of it if the connect fails.

    A connect can fail (time out, be cancelled) after the connection was made: uvloop then
    closes the transport without ever calling ``connection_lost``, leaving the protocol and
    the transport in a reference cycle, with the codec state, until a full collection.
    """

    __slots__ = ("_labels", "_made", "_server", "endpoint")

    def __init__(self, server: H2Server, labels: TargetLabels) -> None:
        self._server = server
        self._labels = labels
        self._made: _H2Upstream | None = None
        #: Set on the single-upstream path: the connection may then serve later clients.
        self.endpoint: Endpoint | None = None

    def __call__(self) -> _H2Upstream:
        server = self._server
        labels = self._labels
        made = _H2Upstream(server, server.ctx.metrics.tcp(labels, "dst"), labels, self.endpoint)
        self._made = made
        return made

    def abandon(self) -> None:
        """The connect failed: release the protocol it made, if any."""
        if self._made is not None:
            self._made.abandon()
            self._made = None


class _H2Upstream(asyncio.Protocol):
    """The proxy's HTTP/2 client connection to the upstream server."""

    def __init__(
        self,
        server: H2Server,
        tcp: TcpStats,
        labels: TargetLabels,
        endpoint: Endpoint | None = None,
    ) -> None:
        #: The client connection whose streams this connection carries.
        self.server = server
        self.tcp = tcp
        #: The endpoint's metric labels, for the streams sent over this connection.
        self.labels = labels
        #: Where it goes, when it may serve a later client connection (single-upstream path).
        self.endpoint = endpoint
        self.conn = new_connection(_config(client_side=True))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Pair] = {}
        self._closed = False
        self._goaway = False
        self._idle_close = False
        self._server_identity: str | None = None
        self._identity_known = False
        self._guard = FloodGuard()
        self._calm = False
        self._pump_all = False
        #: Streams that got response DATA in the read being handled, to move at its end.
        self._pumps: list[_Pair] = []

    def server_identity(self) -> str | None:
        """The mesh identity the server proved on this connection (``None``: plaintext)."""
        if not self._identity_known:
            self._server_identity = verified_server_identity(self.transport)
            self._identity_known = True
        return self._server_identity

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop transports are not subclasses
        self.tcp.open()
        self.conn.initiate_connection()
        _set_windows(self.conn)
        self.flush_out()

    @property
    def busy(self) -> bool:
        """Whether any stream is open on this connection."""
        return bool(self.streams)

    def usable(self) -> bool:
        return (
            not self._closed
            and not self._goaway
            and self.conn.open_outbound_streams < (self.conn.remote_settings.max_concurrent_streams)
        )

    def reusable(self) -> bool:
        """Whether a later client connection may take this one up: open, no GOAWAY either
        way, not over a flood limit, nothing backed up, and no stream left on it."""
        transport = self.transport
        return (
            not self.streams
            and not self._idle_close
            and not self._calm
            and not self._guard.writes_backed_up
            and transport is not None
            and not transport.is_closing()
            and self.usable()
        )

    def flush_out(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.tcp.written.value += len(data)
            self.transport.write(data)

    def _return_window(self, pair: _Pair) -> None:
        """Hand back the connection window that ``pair``'s unforwarded response data holds.

        The stream is gone, so its own window no longer matters; the connection's would
        otherwise shrink by those bytes for good, which a connection that outlives its
        streams (and its first client connection) cannot afford.
        """
        pending = pair.to_down.pending
        held = sum(flow_len for _, flow_len in pending)
        pending.clear()
        if held:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.conn.acknowledge_received_data(held, pair.up_id)

    def open_stream(self, pair: _Pair) -> bool:
        """Send ``pair``'s request on this connection (``False``: refused and answered)."""
        if pair.require_id is not None:
            problem = required_identity_error(pair.require_id, self.server_identity())
            if problem is not None:
                self.server.count(pair, self.labels)
                self.server.identity_refused(pair, problem)
                return False
        sid = self.conn.get_next_available_stream_id()
        pair.up_id = sid
        pair.upstream = self
        self.streams[sid] = pair
        self.server.count(pair, self.labels)
        if pair.observed is not None:
            self.server.observe_forwarded(pair.observed, self)
        end = pair.to_up.ended and not pair.to_up.pending and pair.to_up.trailers is None
        self.conn.send_headers(sid, pair.request_headers, end_stream=end)
        if end:
            pair.to_up.ended = False
        else:
            self.pump(pair)
        return True

    def pump(self, pair: _Pair) -> None:
        if self._guard.writes_backed_up:
            return  # the request waits (unacknowledged to the client) for resume_writing
        try:
            _pump(self.conn, pair.up_id, pair.to_up, self.server.conn, pair.down_id)
        except h2.exceptions.StreamClosedError:
            self.streams.pop(pair.up_id, None)
            self.server.reset_stream(pair, h2.errors.ErrorCodes.CANCEL)

    def reset(self, pair: _Pair, code: int) -> None:
        # Also when the stream already ended here: its response may still wait for the
        # client's window, holding this connection's.
        self._return_window(pair)
        if self.streams.pop(pair.up_id, None) is None:
            return
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.conn.reset_stream(pair.up_id, code)
        self._maybe_close()

    def close_when_idle(self) -> None:
        self._idle_close = True
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self._idle_close and not self.streams and self.transport is not None:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.conn.close_connection()
            self.flush_out()
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.tcp.read.value += len(data)
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush_out()
            if self.transport is not None:
                self.transport.close()
            return
        owed = take_answers_owed(self.conn)  # RST_STREAMs for frames on forgotten streams
        if owed and self._guard.control_frame(owed):
            _log.info("h2_upstream_control_frame_flood")
            self._calm = True
        server = self.server
        for event in events:
            if self._calm:
                break
            try:
                self._on_event(event)
            except h2.exceptions.ProtocolError as exc:
                sid = getattr(event, "stream_id", 0)
                _log.debug("h2_upstream_stream_error", stream_id=sid, error=str(exc))
                pair = self.streams.pop(sid, None) if sid else None
                if pair is not None:
                    with contextlib.suppress(h2.exceptions.ProtocolError):
                        self.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                    server.reset_stream(pair, h2.errors.ErrorCodes.INTERNAL_ERROR, refused=True)
        if self._calm:
            self._pumps.clear()
            self._enhance_your_calm()
        else:
            if self._pumps:
                pumps, self._pumps = self._pumps, []
                pairs = server.pairs
                for pair in pumps:
                    if pairs.get(pair.down_id) is pair:
                        server.pump(pair)
            if self._pump_all:
                self._pump_all = False
                for pair in list(self.streams.values()):
                    self.pump(pair)
        self.flush_out()
        server._flush_out()
        self._maybe_close()

    def _enhance_your_calm(self) -> None:
        """The upstream passed a flood limit: GOAWAY(ENHANCE_YOUR_CALM) and abort.

        Its streams fail toward the client as for any lost connection.
        """
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        self.flush_out()
        if self.transport is not None:
            self.transport.abort()

    def _on_event(self, event: h2.events.Event) -> None:
        server = self.server
        if isinstance(event, h2.events.ResponseReceived):
            pair = self.streams.get(event.stream_id)
            if pair is not None and self._status_is_valid(pair, event.headers):
                end = event.stream_ended is not None
                if end:
                    self.streams.pop(event.stream_id, None)
                server.response_headers(pair, list(event.headers), end)
        elif isinstance(event, h2.events.InformationalResponseReceived):
            pair = self.streams.get(event.stream_id)
            if pair is not None and self._status_is_valid(pair, event.headers):
                server.response_headers(pair, list(event.headers), False)
        elif isinstance(event, h2.events.DataReceived):
            pair = self.streams.get(event.stream_id)
            if pair is None or not event.data:
                if event.flow_controlled_length:
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                return
            pair.to_down.add(event.data, event.flow_controlled_length)
            if pair.observed is not None:
                pair.observed.response_bytes += len(event.data)
            if event.stream_ended is None:
                # Moved once the whole read is handled, with the trailers or the end the
                # same read may hold (StreamEnded moves everything at once).
                pumps = self._pumps
                if not pumps or pumps[-1] is not pair:
                    pumps.append(pair)
        elif isinstance(event, h2.events.TrailersReceived):
            pair = self.streams.get(event.stream_id)
            if pair is not None:
                trailers = filter_trailers(list(event.headers))
                for name, value in trailers:
                    if name == b"grpc-status":
                        pair.grpc_status = _int_or_none(value)
                pair.to_down.trailers = trailers
                if pair.observed is not None:
                    pair.observed.trailers = trailers
        elif isinstance(event, h2.events.StreamEnded):
            pair = self.streams.pop(event.stream_id, None)
            if pair is not None:
                pair.to_down.ended = True
                server.pump(pair)
        elif isinstance(event, h2.events.StreamReset):
            pair = self.streams.pop(event.stream_id, None)
            if pair is not None:
                self._return_window(pair)
                refused = event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                server.reset_stream(pair, event.error_code, refused=refused)
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id == 0:
                self._pump_all = True  # once per read, however many updates it holds
            else:
                found = self.streams.get(event.stream_id)
                if found is not None:
                    self.pump(found)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(event.last_stream_id or 0)
        elif (
            isinstance(event, (h2.events.PingReceived, h2.events.RemoteSettingsChanged))
            and self._guard.control_frame()
        ):
            _log.info("h2_upstream_control_frame_flood")
            self._calm = True

    def _status_is_valid(self, pair: _Pair, headers: Headers) -> bool:
        """Whether a response head carries a three-digit ``:status``; if not, the upstream
        stream is reset and the client gets a bad gateway (RFC 9113 §8.1.1: malformed)."""
        if _has_valid_status(headers):
            return True
        self.reset(pair, h2.errors.ErrorCodes.PROTOCOL_ERROR)
        self.server.respond_error(pair, ProxyErrorKind.UPSTREAM_PROTOCOL, "invalid :status")
        return False

    def _on_goaway(self, last_stream_id: int) -> None:
        self._goaway = True
        self._idle_close = True
        for sid in [s for s in self.streams if s > last_stream_id]:
            pair = self.streams.pop(sid)
            self.server.reset_stream(pair, h2.errors.ErrorCodes.REFUSED_STREAM, refused=True)

    def abandon(self) -> None:
        """The connect that made this connection failed (see :class:`_UpstreamFactory`)."""
        if self._closed:
            return
        self._closed = True
        release(self.conn)
        if self.transport is not None:
            self.tcp.close(0)  # connection_made counted it open
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed:
            return  # abandoned already
        self._closed = True
        try:
            self.tcp.close(getattr(exc, "errno", 0) or 0 if exc else 0)
            streams, self.streams = self.streams, {}
            self.server.upstream_lost(self, list(streams.values()))
        finally:
            release(self.conn)

    def pause_writing(self) -> None:
        """The upstream is not reading: stop reading it, and stop moving request data."""
        self._guard.backed_up()
        if self.transport is not None and not self._closed:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._guard.drained()
        if self._closed or self._calm:
            return
        for pair in list(self.streams.values()):
            flow = pair.to_up
            if flow.pending or flow.ended or flow.trailers is not None:
                self.pump(pair)
        self.flush_out()
        self.server._flush_out()
        if self.transport is not None and not self._guard.writes_backed_up:
            self.transport.resume_reading()
