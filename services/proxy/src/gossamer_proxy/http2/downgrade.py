"""One ``l5d-orig-proto`` HTTP/2 stream sent to the app over HTTP/1.1.

The inbound :class:`~.bridge.H2Server` hands a stream marked ``l5d-orig-proto`` (see
:mod:`.orig_proto`) to a :class:`H1Downgrade`: the request goes to the app over a pooled
HTTP/1.1 connection (:class:`~..http1.upstream.Http1Upstream`), and the app's response
comes back into the stream's response flow, which the server sends within the client's
HTTP/2 windows. Other streams of the same connection keep the HTTP/2 upstream.

Backpressure both ways: request DATA is acknowledged to the client (its window reopened)
only once written to the app, and not while the app's connection is over its write
high-water mark; the app's connection stops being read while more than one window of
response bytes waits for the client.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Final

import structlog

from ..config import Endpoint
from ..errors import ProxyError, ProxyErrorKind
from ..h2codec import h2
from ..http1.headers import Headers, MessageInfo, chunk, filter_trailers, last_chunk
from ..http1.upstream import TOO_LARGE, Http1Upstream
from .orig_proto import DowngradedRequest, upgraded_response_headers

if TYPE_CHECKING:
    from .bridge import H2Server, _Pair

__all__ = ["H1Downgrade"]

_log = structlog.get_logger("gossamer.proxy")

#: Response bytes allowed to wait for the client's window before the app is not read.
_RESPONSE_BUFFER: Final = 1 << 20


class H1Downgrade:
    """Drives one downgraded stream: its request to the app and the app's response back."""

    __slots__ = (
        "_paused_read",
        "_retried",
        "_write_paused",
        "endpoint",
        "pair",
        "request",
        "request_done",
        "response_done",
        "response_started",
        "server",
        "upstream",
    )

    def __init__(
        self, server: H2Server, pair: _Pair, request: DowngradedRequest, endpoint: Endpoint
    ) -> None:
        self.server = server
        self.pair = pair
        self.request = request
        self.endpoint = endpoint
        self.upstream: Http1Upstream | None = None
        self.request_done = False
        self.response_started = False
        self.response_done = False
        self._write_paused = False
        self._paused_read = False
        self._retried = False

    # -- request: client → app ---------------------------------------------------------------

    def start(self) -> None:
        up = self.server.ctx.pool.acquire(self.endpoint)
        if isinstance(up, Http1Upstream):
            up.reused = True
            self._attach(up)
            return
        self.server.ctx.spawn(self._connect())

    async def _connect(self) -> None:
        server = self.server
        endpoint = self.endpoint
        tcp = server.ctx.metrics.tcp(server.labels, "dst")
        try:
            _, up = await server.ctx.connector.open(
                endpoint, lambda: Http1Upstream(endpoint, tcp, server.ctx.limits)
            )
        except ProxyError as exc:
            if self._alive():
                server.respond_error(self.pair, exc.kind, exc.detail)
                server._flush_out()
            return
        if not self._alive():
            up.close()
            return
        self._attach(up)

    def _alive(self) -> bool:
        server = self.server
        return not server._closed and server.pairs.get(self.pair.down_id) is self.pair

    def _attach(self, up: Http1Upstream) -> None:
        self.upstream = up
        if self.pair.observed is not None:
            self.pair.observed.forwarded(self.server.loop.time())
        up.begin(self, no_body=self.request.is_head)
        up.write(self.request.head)
        self.pump()
        self.server._flush_out()

    def pump(self) -> None:
        """Write what the client sent of the body; acknowledge it once written."""
        up = self.upstream
        if up is None or self.request_done or self._write_paused:
            return
        flow = self.pair.to_up
        conn = self.server.conn
        sid = self.pair.down_id
        chunked = self.request.chunked
        parts: list[bytes] = []
        acknowledged = 0
        while flow.pending:
            data, flow_len = flow.pending.pop(0)
            if not isinstance(data, bytes):
                data = bytes(data)  # a joined chunk (bridge._Flow.add)
            if data:
                if chunked:
                    parts += chunk(data)
                else:
                    parts.append(data)
            acknowledged += flow_len
        if flow.ended or flow.trailers is not None:
            if chunked:
                parts.append(last_chunk(flow.trailers or []))
            flow.ended = False
            flow.trailers = None
            self.request_done = True
        if parts:
            up.writelines(parts)
        if acknowledged:
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                conn.acknowledge_received_data(acknowledged, sid)

    # -- response: app → client (ResponseSink) -----------------------------------------------

    def up_head(self, status: int, reason: bytes, info: MessageInfo) -> None:
        if not self._alive():
            return
        if status == 101:
            self.up_lost("the app switched protocols on a downgraded HTTP/2 stream")
            return
        up = self.upstream
        version = up.parser.get_http_version() if up is not None else "1.1"
        headers = upgraded_response_headers(status, info, version)
        if status >= 200:
            self.response_started = True
        self.server.response_headers(self.pair, headers, False)

    def up_body(self, data: bytes) -> None:
        if not self._alive() or not data:
            return
        flow = self.pair.to_down
        if self.pair.observed is not None:
            self.pair.observed.response_bytes += len(data)
        flow.add(data, 0)
        self.server.pump(self.pair)
        if sum(len(d) for d, _ in flow.pending) > _RESPONSE_BUFFER:
            up = self.upstream
            if up is not None and up.transport is not None:
                self._paused_read = True
                up.transport.pause_reading()

    def response_drained(self) -> None:
        """The client's window took the buffered response: read the app again."""
        if self._paused_read and not self.pair.to_down.pending:
            self._paused_read = False
            up = self.upstream
            if up is not None and up.transport is not None:
                up.transport.resume_reading()

    def up_end(self, trailers: Headers) -> None:
        self.response_done = True
        up, self.upstream = self.upstream, None
        if up is not None:
            server = self.server
            if self.request_done and up.is_usable() and not server.ctx.draining:
                up.owner = None
                server.ctx.pool.release(up, server.loop.time())
            else:
                up.close()
        if not self._alive():
            return
        flow = self.pair.to_down
        kept = filter_trailers([(name.lower(), value) for name, value in trailers])
        if kept:
            flow.trailers = kept
        else:
            flow.ended = True
        request_open = not self.request_done
        self.server.pump(self.pair)
        if request_open:
            # The app answered before the request ended: the rest of it is not wanted.
            with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.server.conn.reset_stream(self.pair.down_id, h2.errors.ErrorCodes.NO_ERROR)

    def up_upgraded(self, leftover: bytes) -> None:
        self.up_lost("the app switched protocols on a downgraded HTTP/2 stream")

    def up_lost(self, error: str) -> None:
        up, self.upstream = self.upstream, None
        if up is not None:
            up.abort()
        if not self._alive() or self.response_done:
            return
        server = self.server
        pair = self.pair
        if not self.response_started:
            if (
                up is not None
                and up.reused
                and not up.got_bytes
                and not self.request.has_body
                and not self._retried
            ):
                # A pooled connection the app had closed: nothing was read, send again.
                self._retried = True
                server.ctx.spawn(self._connect())
                return
            kind = (
                ProxyErrorKind.UPSTREAM_PROTOCOL
                if error.startswith("invalid HTTP response")
                else ProxyErrorKind.UPSTREAM_CLOSED
            )
            _log.info("downgraded_request_failed", error=error)
            limit = error[len(TOO_LARGE) :] if error.startswith(TOO_LARGE) else None
            server.respond_error(pair, kind, limit)
        else:
            server.reset_stream(pair, h2.errors.ErrorCodes.INTERNAL_ERROR)
        server._flush_out()

    def up_flush(self) -> None:
        self.server._flush_out()

    def up_pause_writing(self) -> None:
        self._write_paused = True

    def up_resume_writing(self) -> None:
        self._write_paused = False
        self.pump()
        self.server._flush_out()

    # -- the client went away ----------------------------------------------------------------

    def cancel(self) -> None:
        """The client reset the stream (or closed): the app connection cannot be reused."""
        up, self.upstream = self.upstream, None
        if up is not None:
            up.abort()
