"""The proxy's server side of HTTP/1.1: one accepted client connection.

Requests are parsed with httptools and forwarded as they arrive: the head as soon as it is
complete, each body piece as it is read (re-framed for chunked bodies), never buffering a
whole body. Responses stream back the same way. Backpressure runs both ways: when the
upstream's write buffer fills, the client stops being read, and when the client's fills, the
upstream stops being read.

Pipelined requests queue behind the one in flight (reading pauses until it finishes), so
responses keep their order. ``Upgrade`` requests (WebSocket) answered with 101 turn the two
connections into an opaque relay. Failures before a response head become Linkerd's
synthesized responses (502/503/504 with ``l5d-proxy-error``); failures after it abort the
client connection, since a truncated response must not look complete.

Outbound, with discovery (:mod:`..outbound.discovery`), every request picks its endpoint
(P2C peak-EWMA) and reports its outcome back to the balancer; its ServiceProfile route
gives it a timeout (504 on expiry, retries included), a response classification and, on
retryable routes, retries within the profile's retry budget for bodies kept whole in
memory (≤ 64 KiB). A failed attempt's response is read and dropped, never shown to the
client, and the request is sent again to a fresh pick. A connect that fails sent nothing,
so it is re-dispatched to another pick (up to three connects) before any error is shown.
Connections between proxies stay HTTP/1.1, pooled per endpoint.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import http
from typing import Final

import httptools
import structlog
from gossamer_api.transport_header import SessionProtocol

from ..config import Endpoint
from ..connect import UpstreamTls
from ..context import ListenerContext
from ..errors import ProxyError, ProxyErrorKind, http1_error_bytes, http1_error_response
from ..halfclose import can_stay_half_open
from ..inbound_authz import InboundPeer
from ..mesh.backoff import Backoff
from ..mesh.balancer import Outcome
from ..mesh.classify import Classification, classify_for_accrual
from ..mesh.l5d_headers import (
    DIRECTIVES,
    OutboundDirectives,
    outbound_request_headers,
    required_identity_error,
)
from ..mesh.policy_router import PolicyRoute, direct
from ..mesh.profile import Profile, ProfileRoute
from ..mesh.request import MEMO_AUTHORITY_CHARS, RequestView
from ..mesh.retry import (
    DEFAULT_MAX_REQUEST_BYTES,
    ReplayBody,
    RetryCondition,
    RetryVerdict,
    decide_retry,
)
from ..mesh.route_filters import RequestTarget, RouteFilters, SyntheticResponse
from ..mesh.tls_contexts import verified_server_identity
from ..metrics import HttpTargetStats, TargetLabels, TcpStats
from ..observe import ConnectionFacts, ObservedRequest, connection_facts
from ..opaque import relay_transports
from ..outbound.discovery import TargetHandle
from ..outbound.plan import Pick
from ..outbound.policy_route_metrics import (
    BackendSeries,
    RouteSeries,
    default_route_series,
    error_label,
    record_end,
)
from ..outbound.redispatch import may_redispatch
from ..outbound.route_metrics import RouteStats
from ..pool import give_back, wait_turn
from ..timeouts import Phase, Verdict, verdict
from .h2c import body_only_head, has_body
from .headers import (
    L5D_REQUEST_STRIP,
    HeaderError,
    Headers,
    MessageInfo,
    analyze,
    chunk,
    encode_request_head,
    encode_response_head,
    last_chunk,
    transfer_encoding_line,
)
from .request_target import VERDICTS, apply_request_authority
from .upstream import TOO_LARGE, Http1Upstream

__all__ = ["Http1Server"]

_log = structlog.get_logger("gossamer.proxy")

# Reasons the client connection is not being read; reading resumes when none is left.
_BLOCK_UPSTREAM_FULL: Final = 1  # the upstream write buffer is over its high-water mark
_BLOCK_WAIT_UPSTREAM: Final = 2  # body is arriving before an upstream is attached
_BLOCK_PIPELINE: Final = 4  # a pipelined request waits behind the one in flight
_BLOCK_CLIENT_FULL: Final = 8  # the client's write buffer is over its high-water mark
_BLOCK_UNPARSED: Final = 16  # requests already read wait, unparsed, for their turn
_HEAD_END: Final = b"\r\n\r\n"

_INBOUND_STRIP = L5D_REQUEST_STRIP | {b"l5d-client-id"}
#: Outbound, the ``l5d-retry-*``/``l5d-*-timeout`` directives are consumed (honoured only on
#: routes that allow them) and never forwarded (linkerd-wire.md §9 outbound step 9).
_OUTBOUND_STRIP = L5D_REQUEST_STRIP | DIRECTIVES
_CHUNKED: Final = b"transfer-encoding: chunked\r\n"
#: Methods sent again after a connection dies without an answer (RFC 9110 §9.2.2).
_IDEMPOTENT_METHODS: Final = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))


class _TooLargeError(Exception):
    """Raised from a parser callback when the request head has too many fields."""


class _PrimedCallbacks:
    """The callbacks of a parser primed with a framing-only head (see :mod:`.h2c`).

    That head is not a request: its callbacks are ignored while ``priming``. Afterwards
    every callback goes to the server. (Checking this here rather than in the server's own
    callbacks keeps four tests off every other request.)
    """

    __slots__ = ("priming", "server")

    def __init__(self, server: Http1Server) -> None:
        self.server = server
        self.priming = True

    def on_message_begin(self) -> None:
        if not self.priming:
            self.server.on_message_begin()

    def on_url(self, url: bytes) -> None:
        if not self.priming:
            self.server.on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.priming:
            self.server.on_header(name, value)

    def on_headers_complete(self) -> None:
        if not self.priming:
            self.server.on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.server.on_body(body)

    def on_message_complete(self) -> None:
        self.server.on_message_complete()


class Exchange:
    """One request/response pair on a client connection."""

    __slots__ = (
        "access",
        "attempt",
        "attempt_timeout",
        "attempt_timer",
        "backend_series",
        "body",
        "close_after",
        "denied",
        "head",
        "headers",
        "info",
        "is_head",
        "method",
        "observed",
        "pick",
        "policy_route",
        "profile",
        "replay",
        "request_done",
        "response_chunked",
        "response_done",
        "response_filters",
        "response_started",
        "retried",
        "retry_backoff",
        "retry_condition",
        "route",
        "route_series",
        "route_stats",
        "started_at",
        "stats",
        "status",
        "swallow",
        "timer",
        "trailers",
        "tunnel_eof",
        "upgrade_leftover",
        "upstream",
        "url",
        "version",
    )

    def __init__(self) -> None:
        self.method = b""
        self.version = "1.1"
        self.info: MessageInfo | None = None
        self.head = b""
        self.body: list[bytes] = []
        self.trailers: Headers = []
        self.request_done = False
        self.response_started = False
        self.response_done = False
        self.response_chunked = False
        self.close_after = False
        self.is_head = False
        self.upstream: Http1Upstream | None = None
        self.upgrade_leftover: bytes | None = None
        self.started_at = 0.0
        self.stats: HttpTargetStats | None = None
        self.status = 0
        self.retried = False
        self.tunnel_eof = False
        #: Inbound policy refused this request: answer with this instead of forwarding.
        self.denied: ProxyError | None = None
        # Outbound discovery: the request as routing sees it, and where it went.
        self.url = b""
        self.headers: Headers = []
        self.pick: Pick | None = None
        self.profile: Profile | None = None
        self.route: ProfileRoute | None = None
        #: The outbound policy's HTTPRoute decision (``None``: routed by the profile).
        self.policy_route: PolicyRoute | None = None
        self.route_stats: RouteStats | None = None
        self.replay: ReplayBody | None = None
        self.attempt = 0
        #: A failed attempt's response is being read and dropped before a retry.
        self.swallow = False
        self.timer: asyncio.TimerHandle | None = None
        # Policy routes: per-attempt timeout, retry condition and backoff, response filters.
        self.attempt_timeout: float | None = None
        self.attempt_timer: asyncio.TimerHandle | None = None
        self.retry_condition: RetryCondition | None = None
        self.retry_backoff: Backoff | None = None
        self.response_filters: tuple[RouteFilters, ...] = ()
        #: Request observers' record (:mod:`..observe`); ``None`` when nobody observes.
        self.observed: ObservedRequest | None = None
        #: Policy-routed: the route's (and its backend's) ``outbound_*_route_*`` series.
        self.route_series: RouteSeries | None = None
        self.backend_series: BackendSeries | None = None

    def finish_pick(self, outcome: Outcome) -> None:
        pick, self.pick = self.pick, None
        if pick is not None:
            pick.finish(outcome)


#: Whether a complete 5xx (or failing gRPC) response counts toward failure accrual. Linkerd
#: counts responses only when a Service opts in (``balancer.linkerd.io/failure-accrual``,
#: delivered by the outbound policy API); by default only endpoints that fail at the transport
#: level (refused, reset, timed out) are ejected. Counting responses unconditionally ejects a
#: healthy front end whose own backends fail, and fail-fasts every caller of it.
RESPONSE_FAILURES_EJECT = False


class Http1Server(asyncio.Protocol):
    """Drives one client connection. Created after detection has chosen HTTP/1."""

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
        #: Inbound requests from a meshed client tell the app who called (``l5d-client-id``).
        self._client_id_header: tuple[tuple[bytes, bytes], ...] = (
            ((b"l5d-client-id", client_id.encode()),) if client_id else ()
        )
        self.target = target
        self.labels = labels
        self.tcp = tcp
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.limits = ctx.limits
        self.strip = _INBOUND_STRIP if ctx.inbound else _OUTBOUND_STRIP
        self._cur: Exchange | None = None  # being parsed
        self._active: Exchange | None = None  # being forwarded
        self._queue: collections.deque[Exchange] = collections.deque()
        self._headers: Headers = []
        #: Where :meth:`on_header` puts a field: ``_headers``, then the exchange's trailers.
        self._fields: Headers = self._headers
        self._max_fields = ctx.limits.max_headers
        self._url: list[bytes] = []
        self._in_head = False
        self._head_bytes = 0
        self._head_started = 0.0
        self._blocked = 0
        self._reads = 0
        self._seen_reads = 0
        self._quiet_since = self.loop.time()
        self._closed = False
        self._upgraded = False
        self._tunnel: Exchange | None = None
        self._stats_cache: dict[bytes | None, HttpTargetStats] = {}
        self._out: list[bytes] = []
        #: The client is not reading what we write (its write buffer is over the mark).
        self._client_backed_up = False
        #: Read but not parsed: requests wait here while the client's writes are backed up
        #: or another request is queued behind the one in flight.
        self._unparsed = b""
        self._eof_after_unparsed = False
        self._default_host = ((b"host", str(target).encode()),)
        self._handle: TargetHandle | None = None
        #: A request whose ``Upgrade: h2c`` was stripped, which llhttp took for an upgrade.
        self._h2c_upgrade: Exchange | None = None
        #: Request observers: this connection's facts (built on first need) and how many of
        #: its requests were observed (each one's stream number).
        self._facts: ConnectionFacts | None = None
        self._observed = 0

    # -- request observers (:mod:`..observe`) ------------------------------------------------

    def _connection_facts(self) -> ConnectionFacts:
        facts = self._facts
        if facts is None:
            client_id = self.peer.client_id if self.peer is not None else None
            target = (self.target.host, self.target.port)
            facts = connection_facts(self.ctx.direction, self.transport, target, client_id)
            self._facts = facts
        return facts

    def _observe_forwarded(
        self, observed: ObservedRequest, pick: Pick | None, up: Http1Upstream
    ) -> None:
        now = self.loop.time()
        if self.ctx.inbound:
            observed.forwarded(now)
            return
        endpoint = pick.plan.endpoint if pick is not None else up.endpoint
        observed.forwarded(
            now,
            dst_addr=(endpoint.host, endpoint.port),
            server_id=verified_server_identity(up.transport),
            dst_labels=pick.plan.dst_labels if pick is not None else (),
        )

    # -- connection lifecycle ----------------------------------------------------------------

    def start(self, transport: asyncio.Transport, initial: bytes, *, eof: bool = False) -> None:
        """Take over ``transport`` after detection; ``eof`` if the client already half-closed."""
        self.transport = transport
        transport.set_protocol(self)
        self.ctx.connections.add(self)
        if initial:
            self.data_received(initial)
        if eof and not self._closed:
            if not self.eof_received():
                self._close()
            return
        if not self._closed and not self._blocked:
            transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.ctx.connections.discard(self)
        # The parser and this protocol form a cycle; let the stats go now, not at the next
        # cyclic GC, so that their series can expire (metrics.ProxyMetrics.expire_idle).
        self._stats_cache.clear()
        if self._handle is not None:
            self._handle.close()
        if self._upgraded:
            return
        ex = self._active
        if ex is not None:
            ex.finish_pick(Outcome.CANCELLED)
            _cancel_timer(ex)
            if ex.observed is not None:
                ex.observed.end(self.loop.time(), error="connection closed")
        if ex is not None and ex.upstream is not None:
            ex.upstream.abort()
            ex.upstream = None
        for queued in self._queue:
            if queued.upstream is not None:
                queued.upstream.abort()
        self._queue.clear()
        self.tcp.close(getattr(exc, "errno", 0) or 0 if exc else 0)

    def pause_writing(self) -> None:
        """The client is not reading: stop reading the response and parsing new requests.

        A request whose body is arriving keeps arriving (the upstream's own backpressure
        governs it); the next request is not parsed, so answers the proxy makes itself
        (403, 502, ...) cannot pile up either.
        """
        self._client_backed_up = True
        ex = self._active
        if ex is not None and ex.upstream is not None and ex.upstream.transport is not None:
            ex.upstream.transport.pause_reading()
        if self._cur is None and not self._upgraded:
            self._block(_BLOCK_CLIENT_FULL)

    def resume_writing(self) -> None:
        self._client_backed_up = False
        ex = self._active
        if ex is not None and ex.upstream is not None and ex.upstream.transport is not None:
            ex.upstream.transport.resume_reading()
        self._unblock(_BLOCK_CLIENT_FULL)
        if self._unparsed:
            self.loop.call_soon(self._parse_unparsed)

    def _parse_unparsed(self) -> None:
        """Parse the requests read but held back, once nothing holds them any more."""
        if self._closed or self._client_backed_up or self._queue or not self._unparsed:
            return
        data, self._unparsed = self._unparsed, b""
        self._parse(data)
        if self._unparsed or self._closed:
            return
        self._unblock(_BLOCK_UNPARSED)
        if self._eof_after_unparsed:
            self._eof_after_unparsed = False
            if not self.eof_received():
                self._close()

    def _block(self, reason: int) -> None:
        if not self._blocked and self.transport is not None and not self._closed:
            self.transport.pause_reading()
        self._blocked |= reason

    def _unblock(self, reason: int) -> None:
        if self._blocked & reason:
            self._blocked &= ~reason
            if not self._blocked and self.transport is not None and not self._closed:
                self.transport.resume_reading()

    def _write(self, data: bytes) -> None:
        """Queue ``data`` for the client; :meth:`up_flush` sends the batch in one syscall.

        (The hot paths, :meth:`up_head` and :meth:`up_body`, do this inline: a call less.)
        """
        self.tcp.written.value += len(data)
        self._out.append(data)

    def up_flush(self) -> None:
        out = self._out
        if out:
            self._out = []
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.writelines(out)

    def _close(self) -> None:
        self.up_flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- housekeeping ------------------------------------------------------------------------

    def is_idle(self) -> bool:
        return self._active is None and not self._in_head and not self._queue

    def drain(self) -> None:
        """Stop taking requests: close now if idle, else after the response in flight."""
        if self.is_idle():
            self._close()
        else:
            for ex in (self._active, *self._queue):
                if ex is not None:
                    ex.close_after = True

    def tick(self, now: float) -> None:
        if self._closed or self._upgraded:
            return
        if self._reads != self._seen_reads:
            self._seen_reads = self._reads
            self._quiet_since = now
        if self._in_head:
            phase = Phase.HEAD
        elif self._active is None:
            phase = Phase.IDLE
        elif not self._active.request_done and not self._blocked:
            phase = Phase.BODY
        else:
            phase = Phase.WAITING
        result = verdict(
            phase,
            quiet_for=now - self._quiet_since,
            head_age=now - self._head_started,
            limits=self.limits,
        )
        if result is Verdict.CLOSE_IDLE:
            transport = self.transport
            if self._client_backed_up or (transport is not None and transport.is_closing()):
                self._abort_all()  # the client reads nothing: a graceful close never ends
            else:
                self._close()
        elif result is Verdict.HEAD_TIMEOUT:
            self._reject(ProxyErrorKind.HEAD_TIMEOUT)
        elif result is Verdict.BODY_STALLED:
            self._abort_all()

    # -- reading requests --------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._reads += 1
        self.tcp.read.value += len(data)
        if self._tunnel is not None:
            self._tunnel_data(self._tunnel, data)
            return
        if self._unparsed:
            self._unparsed += data  # keeps the order (reading is paused meanwhile)
            return
        size = len(data)
        if (
            self._cur is None
            and not (self._client_backed_up or self._queue)
            and data.find(_HEAD_END) == size - 4
            and self._head_bytes + size <= self.limits.max_head_bytes
        ):
            # The usual read: one whole request head and nothing after it. This is
            # :meth:`_parse` for that case (one piece, the whole of ``data``), inline.
            self._head_bytes += size
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                self._upgrade_at(upgrade, data, data, size)
            except httptools.HttpParserCallbackError as exc:
                self._parse_failed(exc)
            except httptools.HttpParserError as exc:
                self._reject(ProxyErrorKind.BAD_REQUEST, str(exc))
            return
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        """Feed ``data`` to the parser, stopping between requests that must wait.

        A request waits, unparsed, while the client's writes are backed up (it is not
        reading its answers) and while another request is queued behind the one in flight,
        so a read of many pipelined requests costs one queued exchange, not thousands. The
        data goes in pieces that each end with a head (or chunked body) terminator, so the
        proxy can stop between any two requests; a read with one request is one piece.
        """
        size = len(data)
        start = 0
        while start < size:
            if self._cur is None and (self._client_backed_up or self._queue):
                self._unparsed = data[start:]
                self._block(_BLOCK_UNPARSED)
                return
            cut = data.find(_HEAD_END, start)
            stop = size if cut < 0 else cut + 4
            if self._in_head or self._cur is None:
                room = self.limits.max_head_bytes - self._head_bytes
                if stop - start > room and data.find(_HEAD_END, start, start + max(room, 0)) < 0:
                    if start or not self._head_bytes or room <= 0:
                        self._reject(ProxyErrorKind.HEAD_TOO_LARGE)
                        return
                    # Unless its terminator began at the end of the last read: then the head
                    # ends within this read's first 3 bytes. They go alone; if the head goes
                    # on past them, the next turn (``start`` > 0) refuses it.
                    stop = min(room, 3)
                self._head_bytes += stop - start
            piece = data if start == 0 and stop == size else memoryview(data)[start:stop]
            # The parser is fed here, not through :meth:`_feed`, to keep a call off every
            # request; the rarer outcomes (an upgrade, an error) go on in :meth:`_feed`.
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade as upgrade:
                if not self._upgrade_at(upgrade, piece, data, stop):
                    return
            except httptools.HttpParserCallbackError as exc:
                self._parse_failed(exc)
                return
            except httptools.HttpParserError as exc:
                self._reject(ProxyErrorKind.BAD_REQUEST, str(exc))
                return
            if self._closed:
                return
            start = stop

    def _feed(self, piece: bytes | memoryview, data: bytes, stop: int) -> bool:
        """Parse ``piece`` (which ends at ``stop`` in ``data``); False when parsing is over."""
        try:
            self.parser.feed_data(piece)
            return True
        except httptools.HttpParserUpgrade as upgrade:
            return self._upgrade_at(upgrade, piece, data, stop)
        except httptools.HttpParserCallbackError as exc:
            self._parse_failed(exc)
            return False
        except httptools.HttpParserError as exc:
            self._reject(ProxyErrorKind.BAD_REQUEST, str(exc))
            return False

    def _upgrade_at(
        self,
        upgrade: httptools.HttpParserUpgrade,
        piece: bytes | memoryview,
        data: bytes,
        stop: int,
    ) -> bool:
        """The parser stopped at an upgrade in ``piece``; False when parsing is over."""
        offset = int(upgrade.args[0]) if upgrade.args else len(piece)
        ex, self._h2c_upgrade = self._h2c_upgrade, None
        if ex is None:
            self._on_request_upgrade(bytes(piece[offset:]) + data[stop:])
            return False
        # An h2c offer we stripped: go on parsing HTTP/1.1 (see :mod:`.h2c`).
        if ex is self._cur and ex.info is not None:
            callbacks = _PrimedCallbacks(self)
            self.parser = httptools.HttpRequestParser(callbacks)
            try:
                self.parser.feed_data(body_only_head(ex.info))
            finally:
                callbacks.priming = False
        rest = piece[offset:]
        return self._feed(rest, data, stop) if rest else True

    def _parse_failed(self, exc: httptools.HttpParserCallbackError) -> None:
        cause = exc.__context__
        if isinstance(cause, _TooLargeError):
            self._reject(ProxyErrorKind.HEAD_TOO_LARGE)
        elif isinstance(cause, HeaderError):
            self._reject(ProxyErrorKind.BAD_REQUEST, str(cause))
        else:
            # A bug of ours must cost one connection, never the proxy.
            _log.error("http1_server_error", error=repr(cause))
            self._reject(ProxyErrorKind.BAD_REQUEST, "internal proxy error")

    def eof_received(self) -> bool:
        """The client half-closed.

        A request still missing part of its head or body can never complete: abort it
        (and its upstream). Complete requests still get their responses, then the
        connection closes. Over TLS the connection closes now (see halfclose): no response
        can reach the client any more, so the requests in flight are given up upstream.
        """
        if self._unparsed:
            self._eof_after_unparsed = True  # handled once the requests read before it are
            return True
        if self._in_head or (self._cur is not None and not self._cur.request_done):
            self._abort_all()
            return False
        if self._active is None and not self._queue:
            return False
        if not can_stay_half_open(self.transport):
            self._abort_upstreams()
            return False
        tunnel = self._tunnel
        if tunnel is not None:
            # Bytes after an upgrade request belong to the tunnel, and so does its EOF.
            tunnel.tunnel_eof = True
            if tunnel.upstream is not None:
                tunnel.upstream.write_eof()
        for ex in (self._active, *self._queue):
            if ex is not None:
                ex.close_after = True
        return True

    def on_message_begin(self) -> None:
        self._cur = Exchange()
        self._headers = self._fields = []
        self._url = []
        self._in_head = True
        self._head_started = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        fields = self._fields  # the head's fields, then (chunked body) the trailers
        fields.append((name, value))
        if len(fields) > self._max_fields:
            raise _TooLargeError

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        ex = self._cur
        assert ex is not None
        self._fields = ex.trailers
        info = analyze(self._headers, strip=self.strip)  # HeaderError -> 400
        parser = self.parser
        ex.method = parser.get_method()
        ex.version = parser.get_http_version()
        url = b"".join(self._url)
        # One authority for routing, policy, metrics and the upstream (HeaderError -> 400).
        # The usual request (origin-form, one Host already found valid) needs no call.
        host = info.host
        if host is None or info.host_count != 1 or url[:1] != b"/" or not VERDICTS.get(host):
            apply_request_authority(info, url, http10=ex.version == "1.0")
        if info.h2c_stripped and info.upgrade is None and parser.should_upgrade():
            self._h2c_upgrade = ex  # llhttp stops after this head; :meth:`_parse` resumes
        ex.info = info
        ex.is_head = ex.method == b"HEAD"
        ex.close_after = not parser.should_keep_alive() or self.ctx.draining
        if ex.version == "1.0" and not info.keep_alive_token:
            ex.close_after = True
        # HTTP/1.0 clients may omit Host; HTTP/1.1 upstreams require it.
        extra = self._default_host if info.host is None else ()
        if self._client_id_header:
            extra = (*extra, *self._client_id_header)
        ex.started_at = self.loop.time()
        observers = self.ctx.observers
        if observers is not None:
            self._observed += 1
            observed = ex.observed = observers.begin(
                self._connection_facts(),
                self._observed,
                method=ex.method,
                scheme=b"http",
                authority=info.host or b"",
                path=_path_of(url),
                uri=url,
                version=f"HTTP/{ex.version}",
                headers=self._headers,
                now=ex.started_at,
            )
            if observed is not None and observed.added_headers:
                info.forward = observed.forward_headers(info.forward)
        ex.head = encode_request_head(ex.method, url, info, extra=extra)
        if self.ctx.discovery is not None and not self.ctx.inbound:
            # Counted once the endpoint (and so its TLS and dst labels) is known.
            ex.url = url
            ex.headers = self._headers
        else:
            stats = self._stats_cache.get(info.host)  # (the usual hit costs no call)
            ex.stats = stats if stats is not None else self._stats_for(info.host)
            ex.stats.requests.value += 1
        if self.peer is not None:
            ex.denied = self.peer.check_http(
                ex.method, url, info.host, self._headers, ex.started_at
            )
        if self._active is None:
            self._begin(ex)
        else:
            self._queue.append(ex)
            self._block(_BLOCK_PIPELINE)

    def on_body(self, body: bytes) -> None:
        ex = self._cur
        if ex is None or ex.response_done or ex.denied is not None:
            return  # the response already ended; the rest of the body is discarded
        if ex.replay is not None:
            ex.replay.feed(body)
        up = ex.upstream
        if ex is self._active and up is not None:
            if ex.info is not None and ex.info.chunked:
                up.writelines(chunk(body))
            else:
                up.write(body)
        else:
            ex.body.append(body)
            self._block(_BLOCK_WAIT_UPSTREAM)

    def on_message_complete(self) -> None:
        ex = self._cur
        h2c = self._h2c_upgrade
        if h2c is not None and h2c is ex and h2c.info is not None and has_body(h2c.info):
            return  # llhttp skipped the body of a stripped h2c offer; it is read next
        self._cur = None
        if ex is None:
            return
        ex.request_done = True
        if ex.replay is not None:
            ex.replay.end()
        if ex.denied is not None and ex is self._active and not ex.response_done:
            self._fail(ex, ex.denied.kind, ex.denied.detail)
            return
        up = ex.upstream
        if ex is self._active and up is not None and not ex.response_done:
            if ex.info is not None and ex.info.chunked:
                up.write(last_chunk(ex.trailers))
        elif ex.response_done and ex is self._active:
            self._finish(ex)

    def _stats_for(self, host: bytes | None) -> HttpTargetStats:
        stats = self._stats_cache.get(host)
        if stats is None:
            authority = host.decode("latin-1") if host is not None else ""
            if authority and ":" not in authority.rsplit("]", 1)[-1]:
                authority = f"{authority}:{self.target.port}"
            stats = self.ctx.metrics.http(self.labels, authority)
            # One client can send any number of authorities, each up to the head limit:
            # at most 16 are kept, none longer than a DNS name and port.
            if host is None or len(host) <= MEMO_AUTHORITY_CHARS:
                if len(self._stats_cache) >= 16:
                    self._stats_cache.clear()
                self._stats_cache[host] = stats
        return stats

    # -- forwarding --------------------------------------------------------------------------

    def _endpoint_for(self, ex: Exchange) -> Endpoint:
        ctx = self.ctx
        if ctx.fixed_target is not None:
            return ctx.fixed_target
        if ctx.inbound:
            return self.target  # the pod address the accept step checked
        authority = ex.info.dst_override if ex.info is not None and ctx.ingress_mode else None
        return ctx.resolver.resolve(self.target, authority)[0]

    def _begin(self, ex: Exchange) -> None:
        self._active = ex
        if ex.denied is not None:
            if ex.request_done:
                self._fail(ex, ex.denied.kind, ex.denied.detail)
            return  # answered once the (discarded) request body has been read
        if self.ctx.discovery is not None and not self.ctx.inbound:
            if not ex.request_done:
                self._block(_BLOCK_WAIT_UPSTREAM)
            self.ctx.spawn(self._dispatch(ex))
            return
        fixed = self.ctx.fixed_target
        endpoint = fixed if fixed is not None else self._endpoint_for(ex)
        up = None if ex.retried else self.ctx.pool.acquire(endpoint)
        if isinstance(up, Http1Upstream):
            up.reused = True
            self._attach(ex, up)
            return
        if not ex.request_done:
            self._block(_BLOCK_WAIT_UPSTREAM)
        self.ctx.spawn(self._connect(ex, endpoint, None, self.labels))

    async def _connect(
        self, ex: Exchange, endpoint: Endpoint, tls: UpstreamTls | None, labels: TargetLabels
    ) -> None:
        tcp = self.ctx.metrics.tcp(labels, "dst")
        pool = self.ctx.pool
        rationed = not ex.retried and self.ctx.connector.meshed(endpoint, tls)
        if rationed:
            turn = await wait_turn(pool, endpoint)
            if ex is not self._active or self._closed:
                give_back(pool, endpoint, turn, self.loop.time())
                return
            if isinstance(turn, Http1Upstream):
                turn.reused = True
                self._attach(ex, turn)
                return
        try:
            up = await self._open(endpoint, tcp, tls, rationed=rationed)
        except ProxyError as exc:
            if ex is self._active and not self._closed:
                ex.finish_pick(Outcome.CONNECT_FAILURE)
                if not self._retry(ex, None, error=True):
                    self._fail(ex, exc.kind, exc.detail)
            return
        if ex is not self._active or self._closed:
            self._spare(up)
            return
        self._attach(ex, up)

    async def _open(
        self, endpoint: Endpoint, tcp: TcpStats, tls: UpstreamTls | None, *, rationed: bool
    ) -> Http1Upstream:
        """Open a new upstream connection; a rationed connect's slot passes on once it ends."""
        try:
            _, up = await self.ctx.connector.open(
                endpoint, functools.partial(Http1Upstream, endpoint, tcp, self.limits), tls=tls
            )
        finally:
            if rationed:
                self.ctx.pool.connect_done(endpoint)
        return up

    def _spare(self, up: Http1Upstream) -> None:
        """A new connection its exchange no longer needs: another (queued) request may."""
        if up.is_usable() and not self.ctx.draining:
            self.ctx.pool.release(up, self.loop.time())
        else:
            up.close()

    # -- discovery: routing, balancing, timeouts and retries ---------------------------------

    def _target_handle(self) -> TargetHandle:
        handle = self._handle
        if handle is None:
            assert self.ctx.discovery is not None
            handle = self._handle = self.ctx.discovery.target(self.target)
        return handle

    async def _dispatch(self, ex: Exchange) -> None:
        """Route (first attempt), pick an endpoint, then send over a pooled or new connection."""
        handle = self._target_handle()
        discovery = self.ctx.discovery
        assert discovery is not None
        try:
            if ex.attempt == 0:
                ex.attempt = 1
                answer = await self._route(ex, handle)
                if ex is not self._active or self._closed:
                    return
                if answer is not None:
                    self._synthesize(ex, answer)
                    return
            attempt = ex.attempt
            if ex.attempt_timeout is not None:
                _cancel_attempt_timer(ex)
                ex.attempt_timer = self.loop.call_later(
                    ex.attempt_timeout, self._attempt_timed_out, ex, attempt
                )
            override = ex.info.dst_override if ex.info is not None else None
            decision = ex.policy_route
            if self.ctx.ingress_mode and override:
                # Ingress mode routes by l5d-dst-override (a service name:port) when given.
                authority: str | None = override.decode("latin-1")
                pick = await handle.pick(ex.profile, authority, SessionProtocol.HTTP1)
            elif decision is not None:
                if decision.backend is None:
                    kind = (
                        ProxyErrorKind.ROUTE_NOT_FOUND
                        if decision.verdict == "no_route"
                        else ProxyErrorKind.NO_BACKENDS
                    )
                    raise ProxyError(kind)
                if ex.route_series is not None:
                    ex.backend_series = ex.route_series.backend(decision.backend)
                    ex.backend_series.requests.value += 1
                pick = await handle.pick_backend(
                    decision.backend, decision.accrual, SessionProtocol.HTTP1
                )
            else:
                authority = handle.choose_authority(ex.profile)
                pick = await handle.pick(ex.profile, authority, SessionProtocol.HTTP1)
        except ProxyError as exc:
            if ex is self._active and not self._closed and ex.attempt == attempt:
                self._fail(ex, exc.kind, exc.detail)
            return
        if ex is not self._active or self._closed or ex.attempt != attempt:
            pick.finish(Outcome.CANCELLED)
            return
        if ex.route_stats is not None:
            ex.route_stats.actual.value += 1
        await self._send_to(ex, pick)

    async def _send_to(self, ex: Exchange, pick: Pick) -> None:
        """Send ``ex`` to the picked endpoint over a pooled or new connection.

        A failed connect sent nothing, so it is re-dispatched (:mod:`..outbound.redispatch`):
        the pick is finished as a connect failure (the endpoint's reconnect backoff starts)
        and the backend picks again, another endpoint when there is one, up to three
        connects in all. The route timeout keeps running meanwhile and answers 504 when it
        expires first.
        """
        connects = 0
        attempt = ex.attempt
        while True:
            ex.pick = pick
            plan = pick.plan
            labels = TargetLabels(
                "outbound",
                plan.endpoint.host,
                plan.endpoint.port,
                False,
                plan.tls_labels,
                dst=plan.dst_labels,
            )
            endpoint = plan.endpoint
            pool = self.ctx.pool
            rationed = not ex.retried and self.ctx.connector.meshed(endpoint, plan.tls)
            if rationed:
                up = await wait_turn(pool, endpoint)
                if ex is not self._active or self._closed or ex.attempt != attempt:
                    give_back(pool, endpoint, up, self.loop.time())
                    pick.finish(Outcome.CANCELLED)
                    return
            else:
                up = None if ex.retried else pool.acquire(endpoint)
            if isinstance(up, Http1Upstream):
                self._count_outbound(ex, pick, labels)
                up.reused = True
                self._attach(ex, up)
                return
            connects += 1
            tcp = self.ctx.metrics.tcp(labels, "dst")
            try:
                up = await self._open(endpoint, tcp, plan.tls, rationed=rationed)
            except ProxyError as exc:
                if ex is not self._active or self._closed or ex.attempt != attempt:
                    pick.finish(Outcome.CONNECT_FAILURE)
                    return  # answered (timeout) or gone, or a newer attempt runs
                ex.finish_pick(Outcome.CONNECT_FAILURE)
                if pick.can_redispatch and may_redispatch(exc.kind, connects):
                    _log.debug(
                        "connect_failed_redispatching",
                        endpoint=str(endpoint),
                        error=str(exc),
                        attempt=connects,
                    )
                    try:
                        pick = await pick.redispatch()
                    except ProxyError as no_pick:
                        if ex is self._active and not self._closed:
                            self._count_outbound(ex, None, labels)
                            self._fail(ex, no_pick.kind, no_pick.detail)
                        return
                    if ex is not self._active or self._closed or ex.attempt != attempt:
                        pick.finish(Outcome.CANCELLED)
                        return
                    continue
                self._count_outbound(ex, pick, labels)
                if not self._retry(ex, None, error=True):
                    self._fail(ex, exc.kind, exc.detail)
                return
            if ex is not self._active or self._closed or ex.attempt != attempt:
                if ex.pick is pick:
                    ex.finish_pick(Outcome.CANCELLED)
                self._spare(up)
                return
            self._count_outbound(ex, pick, labels)
            self._attach(ex, up)
            return

    def _count_outbound(self, ex: Exchange, pick: Pick | None, labels: TargetLabels) -> None:
        """Count ``ex`` once, under the endpoint that took it (or was last tried)."""
        if ex.stats is not None:
            return
        host = ex.info.host if ex.info is not None else None
        if host is not None:
            authority_label = host.decode("latin-1")
        else:
            authority_label = pick.authority if pick is not None else str(self.target)
        if ":" not in authority_label.rsplit("]", 1)[-1]:
            authority_label = f"{authority_label}:{self.target.port}"
        ex.stats = self.ctx.metrics.http(labels, authority_label)
        ex.stats.requests.value += 1

    async def _route(self, ex: Exchange, handle: TargetHandle) -> SyntheticResponse | None:
        """Find the request's route; arm its timeouts; prepare for retries; apply filters.

        Returns the response to answer with instead of forwarding (a policy filter's
        redirect or injected failure), else ``None``.
        """
        profile = await handle.profile()
        ex.profile = profile
        host = ex.info.host if ex.info is not None and ex.info.host is not None else b""
        if profile is None or not profile.routes:
            views: list[RequestView] = []

            def request_view() -> RequestView:
                views.append(
                    RequestView.from_target(ex.method, ex.url, authority=host, headers=ex.headers)
                )
                return views[0]

            decision = ex.policy_route = await handle.policy_route(profile, request_view)
            discovery = self.ctx.discovery
            series = discovery.policy_route_metrics if discovery is not None else None
            if decision is not None and decision.action is not None and series is not None:
                ex.route_series = series.route(decision.parent, decision.action, host)
            elif decision is None and series is not None and not _splits(profile):
                default = handle.default_route()
                ex.route_series, ex.backend_series = default_route_series(series, default, host)
            if decision is not None and decision.action is not None and views:
                return self._apply_policy(ex, decision, views[0])
            return None
        assert self.ctx.discovery is not None
        view = RequestView.from_target(ex.method, ex.url, authority=host, headers=ex.headers)
        route = ex.route = profile.route_for(view)
        if route is None:
            return None
        route_metrics = self.ctx.discovery.route_metrics
        if route_metrics is not None:
            dst = f"{profile.fully_qualified_name}:{self.target.port}"
            ex.route_stats = route_metrics.stats(dst, route)
            ex.route_stats.requests.value += 1
        if route.timeout is not None:
            ex.timer = self.loop.call_later(route.timeout, self._route_timeout, ex)
        if profile.may_retry(route):
            budget = self.ctx.discovery.budget(profile, self.loop.time())
            if budget is not None:
                budget.deposit(self.loop.time())
            # Keep a copy of the body for replay (what arrived so far, then each piece).
            replay = ex.replay = ReplayBody()
            for piece in ex.body:
                replay.feed(piece)
            if ex.request_done:
                replay.end()
        return None

    def _apply_policy(
        self, ex: Exchange, decision: PolicyRoute, view: RequestView
    ) -> SyntheticResponse | None:
        """Set up a policy-routed request: timeouts, retries, then the request filters.

        ``l5d-*`` directives (stripped from the forwarded head already) override the
        route's timeouts and retry only where the route allows them. The request filters
        rewrite the head the upstream gets, or answer in its place.
        """
        action = decision.action
        assert action is not None
        directives: OutboundDirectives | None = None
        if action.allow_l5d_request_headers:
            _, directives = outbound_request_headers(ex.headers, allow_overrides=True)
            for problem in directives.errors:
                _log.info("l5d_header_ignored", problem=problem)
        directed = direct(decision, directives)
        request_timeout = directed.request_timeout
        if request_timeout is None and decision.attempt_timeout is None and decision.timeout:
            request_timeout = decision.timeout
        if request_timeout:
            ex.timer = self.loop.call_later(request_timeout, self._route_timeout, ex)
        ex.attempt_timeout = directed.attempt_timeout
        if directed.retry is not None:
            ex.retry_condition = directed.retry
            ex.retry_backoff = directed.backoff
            replay = ex.replay = ReplayBody(action.max_request_bytes or DEFAULT_MAX_REQUEST_BYTES)
            for piece in ex.body:
                replay.feed(piece)
            if ex.request_done:
                replay.end()
        backend = decision.backend
        chain = [f for f in (action.filters, backend and backend.filters) if f and not f.empty]
        if not chain:
            return None
        info = ex.info
        assert info is not None
        assert self.ctx.discovery is not None
        rng = self.ctx.discovery.rng
        target = RequestTarget(
            "http", view.authority, view.path, view.query, decision.matched_prefix
        )
        headers = info.forward
        for filters in chain:
            result = filters.apply_request(headers, rng, target)
            if isinstance(result, SyntheticResponse):
                return result
            headers = result
        if headers != info.forward:
            info = ex.info = dataclasses.replace(info, forward=headers)
            has_host = any(name.lower() == b"host" for name, _ in headers)
            ex.head = encode_request_head(
                ex.method, ex.url, info, extra=() if has_host else self._default_host
            )
        ex.response_filters = tuple(f for f in chain if f.response_modifiers)
        return None

    def _synthesize(self, ex: Exchange, answer: SyntheticResponse) -> None:
        """Answer ``ex`` with a response a route filter made (redirect, injected failure)."""
        ex.status = answer.status
        if ex.stats is None and self.ctx.discovery is not None and not self.ctx.inbound:
            host = ex.info.host if ex.info is not None else None
            ex.stats = self._stats_for(host)
            ex.stats.requests.value += 1
        if ex.stats is not None:
            ex.stats.observe_latency(answer.status, (self.loop.time() - ex.started_at) * 1000.0)
            ex.stats.response(answer.status, answer.grpc_status)
        if ex.route_series is not None:
            self._route_ended(ex, answer.status, "")
        close = ex.close_after or not ex.request_done
        self._write(_synthetic_bytes(answer, close=close))
        ex.response_started = ex.response_done = True
        ex.close_after = close
        self._finish(ex)
        self.up_flush()

    def _attempt_timed_out(self, ex: Exchange, attempt: int) -> None:
        """One attempt ran past its time (``timeouts.response``/retry ``timeout``)."""
        ex.attempt_timer = None
        if ex is not self._active or self._closed or ex.response_done or ex.attempt != attempt:
            return
        if ex.response_started and not ex.swallow:
            return  # the head is through; the request timeout still bounds the rest
        up, ex.upstream = ex.upstream, None
        if up is not None:
            up.abort()
        ex.finish_pick(Outcome.FAILURE)
        ex.swallow = False
        if self._retry(ex, None, error=True):
            return
        ex.close_after = ex.close_after or not ex.request_done
        self._fail(ex, ProxyErrorKind.RESPONSE_TIMEOUT, None)

    def _retry(
        self, ex: Exchange, status: int | None, *, error: bool = False, grpc: int | None = None
    ) -> bool:
        """Whether this failed attempt may be retried (taking a budget token if so)."""
        if ex.retry_condition is not None:
            return self._policy_retry(ex, ex.retry_condition, status, grpc, error)
        profile, route = ex.profile, ex.route
        if profile is None or route is None or not profile.may_retry(route):
            return False
        if not ex.request_done or ex.response_started or self._closed:
            return False
        classification = route.classify(status, error=error)
        if classification is not Classification.FAILURE:
            return False
        assert self.ctx.discovery is not None
        now = self.loop.time()
        verdict_ = decide_retry(
            attempt=ex.attempt,
            body=ex.replay,
            now=now,
            profile_failure=classification,
            budget=self.ctx.discovery.budget(profile, now),
            error=error,
        )
        if verdict_ is not RetryVerdict.RETRY:
            _log.debug("retry_skipped", reason=verdict_.value, attempt=ex.attempt)
            return False
        if error:
            self._resend(ex)
        return True

    def _policy_retry(
        self,
        ex: Exchange,
        condition: RetryCondition,
        status: int | None,
        grpc: int | None,
        error: bool,
    ) -> bool:
        """A policy route's ``Retry``: its conditions and ``max_retries``, no budget."""
        if not ex.request_done or ex.response_started or self._closed:
            return False
        verdict_ = decide_retry(
            attempt=ex.attempt,
            body=ex.replay,
            now=self.loop.time(),
            condition=condition,
            status=status,
            grpc=grpc,
            error=error,
        )
        if verdict_ is not RetryVerdict.RETRY:
            _log.debug("retry_skipped", reason=verdict_.value, attempt=ex.attempt)
            return False
        if error:
            self._resend(ex)
        return True

    def _resend(self, ex: Exchange) -> None:
        """Send the request again, body from the replay copy, to a fresh pick.

        Policy retries wait out the route's backoff first (when it has one).
        """
        _cancel_attempt_timer(ex)
        ex.attempt += 1
        ex.swallow = False
        ex.status = 0
        ex.retried = False
        ex.body = list(ex.replay.chunks()) if ex.replay is not None else []
        backoff = ex.retry_backoff
        if backoff is not None and self.ctx.discovery is not None:
            delay = backoff.delay(ex.attempt - 2, self.ctx.discovery.rng)
            if delay > 0:
                self.loop.call_later(delay, self._resend_now, ex, ex.attempt)
                return
        self.ctx.spawn(self._dispatch(ex))

    def _resend_now(self, ex: Exchange, attempt: int) -> None:
        if (
            ex is self._active
            and not self._closed
            and not ex.response_done
            and ex.attempt == attempt
        ):
            self.ctx.spawn(self._dispatch(ex))

    def _route_timeout(self, ex: Exchange) -> None:
        ex.timer = None
        if ex is not self._active or self._closed or ex.response_done:
            return
        ex.finish_pick(Outcome.FAILURE)
        if ex.response_started and not ex.swallow:
            self._abort_all()  # a response cut short must not look complete
            return
        up = ex.upstream
        ex.upstream = None
        if up is not None:
            up.abort()
        ex.close_after = ex.close_after or not ex.request_done
        self._fail(ex, ProxyErrorKind.RESPONSE_TIMEOUT, None)

    def _attach(self, ex: Exchange, up: Http1Upstream) -> None:
        info = ex.info
        required = info.require_id if info is not None else None
        if required is not None and not self.ctx.inbound:
            problem = required_identity_error(
                required.decode("latin-1"), verified_server_identity(up.transport)
            )
            if problem is not None:
                # Nothing was sent: the endpoint did no wrong, the request just cannot go there.
                ex.finish_pick(Outcome.CANCELLED)
                up.close()
                self._fail(ex, ProxyErrorKind.IDENTITY_MISMATCH, problem)
                return
        ex.upstream = up
        if ex.observed is not None:
            self._observe_forwarded(ex.observed, ex.pick, up)
        up.begin(self, no_body=ex.is_head)
        chunked = info is not None and info.chunked
        if not ex.body and not (chunked and ex.request_done):
            up.write(ex.head)  # nothing read past the head yet (a GET): no list to join
        else:
            parts = [ex.head]  # the head and the body read so far, in one write
            for piece in ex.body:
                if chunked:
                    parts += chunk(piece)
                else:
                    parts.append(piece)
            ex.body = []
            if ex.request_done and chunked:
                parts.append(last_chunk(ex.trailers))
            up.writelines(parts)
        if ex.upgrade_leftover:
            up.write(ex.upgrade_leftover)
            ex.upgrade_leftover = None
        if ex.tunnel_eof:
            up.write_eof()
        if self._blocked & _BLOCK_WAIT_UPSTREAM and (
            ex is self._cur or ex.request_done or ex is self._tunnel
        ):
            self._unblock(_BLOCK_WAIT_UPSTREAM)

    def _on_request_upgrade(self, leftover: bytes) -> None:
        ex = self._active if self._cur is None else self._cur
        if ex is None or ex.info is None or ex.info.upgrade is None or ex is not self._active:
            # CONNECT or an upgrade we cannot honour: answer and close.
            self._reject(ProxyErrorKind.BAD_REQUEST, "unsupported upgrade or CONNECT")
            return
        ex.request_done = True
        ex.close_after = True  # unless a 101 turns the connection opaque, it cannot continue
        if ex.denied is not None:
            self._cur = None
            self._fail(ex, ex.denied.kind, ex.denied.detail)
            return
        self._cur = None
        # From here on the client's bytes (and its EOF) belong to the would-be tunnel.
        self._tunnel = ex
        if leftover:
            self._tunnel_data(ex, leftover)

    def _tunnel_data(self, ex: Exchange, data: bytes) -> None:
        if ex.upstream is not None:
            ex.upstream.write(data)
            return
        ex.upgrade_leftover = (ex.upgrade_leftover or b"") + data
        if len(ex.upgrade_leftover) > 1 << 16:
            self._block(_BLOCK_WAIT_UPSTREAM)

    # -- upstream events (ResponseSink) --------------------------------------------------------

    def up_head(self, status: int, reason: bytes, info: MessageInfo) -> None:
        ex = self._active
        if ex is None or self._closed:
            return
        if status < 200 and status != 101 and status >= 100:  # interim (1xx); 2xx tested first
            if ex.version != "1.0":
                self._write(encode_response_head(status, reason, info, framing=b"", close=False))
            return
        ex.status = status
        if (ex.route is not None or ex.retry_condition is not None) and self._retry(
            ex, status, grpc=_grpc_code(info.grpc_status)
        ):
            ex.swallow = True  # read and drop this attempt's response, then send again
            return
        if info.codings and ex.version == "1.0" and not ex.is_head and status not in (204, 304):
            # A coding beyond chunked cannot reach an HTTP/1.0 client (RFC 9112 §6.1), and
            # dropping it would hand the client an undecodable body as if it were plain.
            up, ex.upstream = ex.upstream, None
            if up is not None:
                up.abort()
            ex.close_after = True
            self._fail(ex, ProxyErrorKind.UPSTREAM_PROTOCOL, "transfer coding for HTTP/1.0")
            return
        ex.response_started = True
        if ex.observed is not None:
            ex.observed.response(status, info.forward, self.loop.time(), info.content_length)
        if ex.attempt_timer is not None:
            _cancel_attempt_timer(ex)
        for filters in ex.response_filters:
            info.forward = filters.apply_response(info.forward)
        if ex.route_stats is not None and ex.route is not None:
            ex.route_stats.response(
                status, ex.route.classify(status), (self.loop.time() - ex.started_at) * 1000.0
            )
        if ex.stats is not None:
            ex.stats.observe_latency(status, (self.loop.time() - ex.started_at) * 1000.0)
        if info.proxy_connection_close:
            ex.close_after = True
        if not ex.request_done and status != 101:
            # An early response (e.g. 413): the rest of the request cannot be resynchronised.
            ex.close_after = True
        if status == 101:
            self._write(encode_response_head(status, reason, info, framing=b"", close=False))
            return
        if ex.is_head or status in (204, 304):
            framing = (
                b"content-length: %d\r\n" % info.content_length
                if info.content_length is not None
                else b""
            )
        elif info.content_length is not None:
            framing = b"content-length: %d\r\n" % info.content_length
        elif ex.version != "1.0":
            framing = transfer_encoding_line(info) if info.codings else _CHUNKED
            ex.response_chunked = True
        else:
            framing = b""  # close-delimited to an HTTP/1.0 client
            ex.close_after = True
        head = encode_response_head(status, reason, info, framing=framing, close=ex.close_after)
        self.tcp.written.value += len(head)
        self._out.append(head)

    def up_body(self, data: bytes) -> None:
        ex = self._active
        if ex is None or self._closed or ex.swallow:
            return
        if ex.observed is not None:
            ex.observed.response_bytes += len(data)
        if ex.response_chunked:
            parts = chunk(data)
            self.tcp.written.value += len(data) + len(parts[0]) + 2
            self._out += parts
        else:
            self.tcp.written.value += len(data)
            self._out.append(data)

    def up_end(self, trailers: Headers) -> None:
        ex = self._active
        if ex is None:
            return
        if ex.swallow:
            ex.finish_pick(Outcome.FAILURE)
            up, ex.upstream = ex.upstream, None
            if up is not None:
                if up.is_usable() and not self.ctx.draining:
                    up.owner = None
                    self.ctx.pool.release(up, self.loop.time())
                else:
                    up.close()
            if not self._closed:
                self._resend(ex)
            return
        if ex.pick is not None:
            failed = classify_for_accrual(ex.status, grpc=_grpc_status(trailers))
            counts = RESPONSE_FAILURES_EJECT or ex.pick.responses_eject
            response_failed = counts and failed is Classification.FAILURE
            ex.finish_pick(Outcome.FAILURE if response_failed else Outcome.SUCCESS)
        if ex.response_chunked and not self._closed:
            self._write(last_chunk(trailers))
        ex.response_done = True
        if ex.stats is not None:
            ex.stats.response(ex.status, _grpc_status(trailers) if trailers else None)
        if ex.observed is not None:
            ex.observed.end(self.loop.time(), grpc_status=_grpc_status(trailers), trailers=trailers)
        if ex.route_series is not None:
            self._route_ended(ex, ex.status, "")
        up = ex.upstream
        ex.upstream = None
        if up is not None:
            if ex.request_done and not self.ctx.draining:
                up.owner = None
                self.ctx.pool.release(up, self.loop.time())  # closes it if unusable
            else:
                up.close()
        # (When the response finished first, the rest of the request is not forwarded:
        # the connection closes afterwards.)
        self._finish(ex)

    def up_upgraded(self, leftover: bytes) -> None:
        ex = self._active
        up = ex.upstream if ex is not None else None
        if ex is None or up is None or up.transport is None or self.transport is None:
            return
        if ex.status != 101:
            self.up_lost("upgrade without 101")
            return
        if ex.stats is not None:
            ex.stats.response(101)
        if ex.observed is not None:
            ex.observed.end(self.loop.time())
        self._upgraded = True
        self._active = None
        self.ctx.connections.discard(self)
        tcp = self.tcp
        self.up_flush()
        self._tunnel = None
        down, _ = relay_transports(
            self.transport,
            up.transport,
            to_upstream=ex.upgrade_leftover or b"",
            to_downstream=leftover,
            downstream_stats=tcp,
            upstream_stats=up.stats,
            on_closed=lambda: tcp.close(0),
        )
        if ex.tunnel_eof:
            down.mark_eof()  # the client half-closed already; its EOF went upstream

    def up_lost(self, error: str) -> None:
        ex = self._active
        if ex is None or self._closed:
            return
        up = ex.upstream
        ex.upstream = None
        if ex.swallow:
            ex.finish_pick(Outcome.FAILURE)
            self._resend(ex)
            return
        if not ex.response_started:
            no_body = ex.info is None or (not ex.info.chunked and not ex.info.content_length)
            if (
                up is not None
                and up.reused
                and not up.got_bytes
                and no_body
                and not ex.retried
                and ex.method in _IDEMPOTENT_METHODS
            ):
                # A pooled connection the server had closed, or broke: sent again, once. The
                # server may have acted on the request, so only an idempotent one (RFC 9110
                # §9.2.2); a POST gets the error instead of running twice.
                ex.finish_pick(Outcome.CANCELLED)
                ex.retried = True
                self._begin(ex)
                return
            ex.finish_pick(Outcome.FAILURE)
            if self._retry(ex, None, error=True):
                return
            kind = (
                ProxyErrorKind.UPSTREAM_PROTOCOL
                if error.startswith("invalid HTTP response")
                else ProxyErrorKind.UPSTREAM_CLOSED
            )
            limit = error[len(TOO_LARGE) :] if error.startswith(TOO_LARGE) else None
            self._fail(ex, kind, limit)
            return
        # The response was cut short: make that visible to the client.
        ex.finish_pick(Outcome.FAILURE)
        if ex.stats is not None:
            ex.stats.response(ex.status, None, "response body truncated")
        if ex.observed is not None:
            ex.observed.end(self.loop.time(), error="response body truncated")
        self._abort_all()

    def up_pause_writing(self) -> None:
        self._block(_BLOCK_UPSTREAM_FULL)

    def up_resume_writing(self) -> None:
        self._unblock(_BLOCK_UPSTREAM_FULL)

    # -- completion and failure ----------------------------------------------------------------

    def _route_ended(self, ex: Exchange, status: int, error: str) -> None:
        """Count a policy-routed exchange on its route and backend series (once)."""
        route, ex.route_series = ex.route_series, None
        if route is not None:
            elapsed = self.loop.time() - ex.started_at
            record_end(route, ex.backend_series, status, None, error, elapsed)

    def _finish(self, ex: Exchange) -> None:
        if ex is not self._active:
            return
        if ex.observed is not None:  # a response the proxy made (reported once)
            ex.observed.answered(ex.status, None, self.loop.time())
        if ex.timer is not None or ex.attempt_timer is not None:  # (a call saved otherwise)
            _cancel_timer(ex)
        self._active = None
        if ex.close_after or self._closed:
            self._close()
            return
        if self._queue:
            self._unblock(_BLOCK_UPSTREAM_FULL | _BLOCK_WAIT_UPSTREAM)
            nxt = self._queue.popleft()
            if not self._queue:
                self._unblock(_BLOCK_PIPELINE)
            self._begin(nxt)
        elif self._blocked:  # the usual keep-alive turn has nothing blocked: no call
            self._unblock(_BLOCK_UPSTREAM_FULL | _BLOCK_WAIT_UPSTREAM | _BLOCK_PIPELINE)
        if self._unparsed and not self._queue:
            self.loop.call_soon(self._parse_unparsed)  # never from inside the parser

    def _fail(self, ex: Exchange, kind: ProxyErrorKind, detail: str | None) -> None:
        """Answer ``ex`` with Linkerd's synthesized error response."""
        ex.status = kind.status
        ex.finish_pick(Outcome.FAILURE)
        if ex.route_stats is not None:
            ex.route_stats.response(
                kind.status,
                Classification.FAILURE,
                (self.loop.time() - ex.started_at) * 1000.0,
            )
        if ex.stats is None and self.ctx.discovery is not None and not self.ctx.inbound:
            host = ex.info.host if ex.info is not None else None
            ex.stats = self._stats_for(host)
            ex.stats.requests.value += 1
        if ex.stats is not None:
            ex.stats.observe_latency(kind.status, (self.loop.time() - ex.started_at) * 1000.0)
            ex.stats.response(kind.status, None, kind.name.lower())
        if ex.route_series is not None:
            self._route_ended(ex, 0, error_label(kind))
        if ex.observed is not None:
            ex.observed.answered(kind.status, kind.name, self.loop.time())
        close = ex.close_after or not ex.request_done or kind.closes_connection
        if detail is None:
            self._write(http1_error_bytes(kind, close=close))
        else:
            self._write(http1_error_response(kind, close=close, detail=detail))
        ex.response_started = ex.response_done = True
        ex.close_after = close
        self._finish(ex)
        self.up_flush()

    def _reject(self, kind: ProxyErrorKind, detail: str | None = None) -> None:
        """The client sent something unacceptable: answer if nothing is in flight, then close."""
        if self._closed:
            return
        if self._active is None or not self._active.response_started:
            self._write(http1_error_bytes(kind, close=True))
        self._abort_upstreams()
        self._closed = True
        self._close()

    def _abort_upstreams(self) -> None:
        for ex in (self._active, *self._queue):
            if ex is not None and ex.upstream is not None:
                ex.upstream.abort()
                ex.upstream = None

    def _abort_all(self) -> None:
        self._abort_upstreams()
        if self.transport is not None:
            self.transport.abort()


def _path_of(url: bytes) -> bytes:
    """The path (and query) of a request target in origin or absolute form."""
    if url[:1] == b"/" or b"://" not in url:
        return url
    rest = url.split(b"://", 1)[1]
    slash = rest.find(b"/")
    return rest[slash:] if slash >= 0 else b"/"


def _cancel_timer(ex: Exchange) -> None:
    if ex.timer is not None:
        ex.timer.cancel()
        ex.timer = None
    _cancel_attempt_timer(ex)


def _cancel_attempt_timer(ex: Exchange) -> None:
    if ex.attempt_timer is not None:
        ex.attempt_timer.cancel()
        ex.attempt_timer = None


def _splits(profile: Profile | None) -> bool:
    """The profile splits traffic (``dst_overrides``): no policy route counts it."""
    return profile is not None and len(profile.dst_overrides) > 0


def _grpc_code(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _synthetic_bytes(answer: SyntheticResponse, *, close: bool) -> bytes:
    """An HTTP/1.1 response with no body for a filter's :class:`SyntheticResponse`."""
    try:
        reason = http.HTTPStatus(answer.status).phrase
    except ValueError:
        reason = ""
    parts = [b"HTTP/1.1 %d %s\r\n" % (answer.status, reason.encode("ascii"))]
    for name, value in answer.headers:
        parts += (name, b": ", value, b"\r\n")
    if answer.grpc_status is not None:
        parts.append(b"content-type: application/grpc\r\ngrpc-status: %d\r\n" % answer.grpc_status)
        if answer.grpc_message:
            message = answer.grpc_message.encode("ascii", "replace")
            parts += (b"grpc-message: ", message, b"\r\n")
    parts.append(b"content-length: 0\r\n")
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def _grpc_status(trailers: Headers) -> int | None:
    for name, value in trailers:
        if name.lower() == b"grpc-status":
            try:
                return int(value)
            except ValueError:
                return None
    return None
