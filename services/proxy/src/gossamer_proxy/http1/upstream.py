"""The proxy's client side of HTTP/1.1: one pooled upstream connection.

An :class:`Http1Upstream` parses responses with httptools and reports them, event by event,
to whichever :class:`ResponseSink` (a client connection's current exchange) owns it. Between
exchanges it sits in the :class:`~gossamer_proxy.pool.Pool`; if the server closes it there, it
leaves the pool at once.

Every upstream is hostile (issue #16): a response's head, counting any interim 1xx heads
before it, may take at most ``max_head_bytes``; each header section (head, trailers) at most
``max_headers`` fields; and the bytes between two pieces of body that are not body (chunk
framing, trailers) at most ``max_head_bytes`` too. Past a limit the exchange ends as for any
invalid response and the connection is aborted. (httptools gathers a header value across
reads until it ends, so without these a peer could grow the proxy's memory without bound.)
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol, cast

import httptools

from ..config import Endpoint, Http1Limits
from ..metrics import TcpStats
from .headers import HeaderError, Headers, MessageInfo, analyze

__all__ = ["TOO_LARGE", "Http1Upstream", "ResponseSink"]

_INVALID: Final = "invalid HTTP response: "
_OVER_LIMIT: Final = "too large: "
#: How a :meth:`ResponseSink.up_lost` error begins when a response broke a size limit; the
#: rest of the error names the limit (for the ``l5d-proxy-error`` header).
TOO_LARGE: Final = _INVALID + _OVER_LIMIT
_HEAD_END: Final = b"\r\n\r\n"


class ResponseSink(Protocol):
    def up_head(self, status: int, reason: bytes, info: MessageInfo) -> None: ...
    def up_body(self, data: bytes) -> None: ...
    def up_end(self, trailers: Headers) -> None: ...
    def up_upgraded(self, leftover: bytes) -> None: ...
    def up_lost(self, error: str) -> None: ...
    def up_flush(self) -> None: ...
    def up_pause_writing(self) -> None: ...
    def up_resume_writing(self) -> None: ...


class _StopParsingError(Exception):
    """Raised from a parser callback to end a message the parser cannot frame (HEAD)."""


class _StrayResponseError(Exception):
    """Raised from a parser callback when a response begins that no request waits for."""


class _TooManyFieldsError(Exception):
    """Raised from a parser callback when a header section has too many fields."""


class Http1Upstream(asyncio.Protocol):
    __slots__ = (
        "_awaiting_head",
        "_close_delimited",
        "_closed",
        "_fields",
        "_headers",
        "_in_head",
        "_interim",
        "_max_fields",
        "_max_head_bytes",
        "_no_body",
        "_reason",
        "_trailers",
        "_unbodied",
        "endpoint",
        "got_bytes",
        "idle_since",
        "keep_alive",
        "meshed",
        "owner",
        "parser",
        "reused",
        "stats",
        "transport",
    )

    def __init__(self, endpoint: Endpoint, stats: TcpStats | None, limits: Http1Limits) -> None:
        self.endpoint = endpoint
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.owner: ResponseSink | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self.keep_alive = True
        self.reused = False
        self.got_bytes = False
        #: Set once connected: mTLS to a peer proxy (the pool keeps these idle for longer).
        self.meshed = False
        self._closed = False
        self._headers: Headers = []
        self._trailers: Headers = []
        #: Where :meth:`on_header` puts a field: ``_headers``, then ``_trailers``.
        self._fields = self._headers
        self._in_head = False
        self._interim = False
        self._no_body = False
        self._reason = b""
        self._close_delimited = False
        self._max_head_bytes = limits.max_head_bytes
        self._max_fields = limits.max_headers
        #: From :meth:`begin` until the final (non-1xx) head has been parsed.
        self._awaiting_head = False
        #: Bytes read that are not body: until the final head, all of them (interim heads
        #: too); after it, those since the last piece of body (chunk framing, trailers).
        self._unbodied = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop transports are not subclasses
        self.meshed = transport.get_extra_info("ssl_object") is not None
        if self.stats is not None:
            self.stats.open()

    def is_usable(self) -> bool:
        return not self._closed and self.keep_alive and self.transport is not None

    def begin(self, owner: ResponseSink, *, no_body: bool) -> None:
        """Hand the connection to a new exchange; ``no_body`` for HEAD requests."""
        self.owner = owner
        self._no_body = no_body
        self.got_bytes = False
        self._awaiting_head = True
        self._unbodied = 0
        transport = self.transport
        if transport is not None:
            transport.resume_reading()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        if self.stats is not None:
            self.stats.written.value += len(data)
        self.transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        assert self.transport is not None
        if self.stats is not None:
            self.stats.written.value += sum(map(len, parts))
        self.transport.writelines(parts)

    def write_eof(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()

    def close(self) -> None:
        self._closed = True
        self.owner = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self._closed = True
        self.owner = None
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self.stats is not None:
            self.stats.close(getattr(exc, "errno", 0) or 0 if exc else 0)
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.up_lost(str(exc) if exc else "connection closed by server")

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.up_pause_writing()

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.up_resume_writing()

    # -- reading -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        size = len(data)
        if self.stats is not None:
            self.stats.read.value += size
        if self.owner is None:
            # Bytes on an idle connection: the server broke framing; never reuse it.
            self.keep_alive = False
            self.close()
            return
        self.got_bytes = True
        owner = self.owner
        if self._awaiting_head:
            # Refused only if no head ends within the room left, so a read with a small
            # head and a large body passes; interim heads count against the same room.
            room = self._max_head_bytes - self._unbodied
            if size > room and data.find(_HEAD_END, 0, max(room, 0)) < 0:
                rest = self._head_end_straddling(owner, data, room)
                if not rest:
                    return
                data, size = rest, len(rest)
        # Counted before parsing: the final head (:meth:`on_headers_complete`), each piece of
        # body (:meth:`on_body`) and the next exchange (:meth:`begin`) start again at 0.
        self._unbodied += size
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
            if not self._parse_stopped(owner, exc, data):
                return
        if self._unbodied > self._max_head_bytes and self.owner is not None:
            self._unbodied_too_large()
        owner.up_flush()

    def _head_end_straddling(self, owner: ResponseSink, data: bytes, room: int) -> bytes:
        """No head ends within the first ``room`` bytes of ``data``, except perhaps one whose
        terminator began at the end of the previous read: that one ends within this read's
        first 3 bytes. Those are parsed alone; if the head then goes on, it is over the
        limit. Returns the rest of ``data`` to parse as usual (empty when done).
        """
        first = min(room, 3) if self._unbodied else 0
        if first > 0:
            self._unbodied += first
            try:
                self.parser.feed_data(data[:first])
            except (httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
                if not self._parse_stopped(owner, exc, data):
                    return b""
            if self._closed:  # a protocol error, or a response nobody asked for
                owner.up_flush()
                return b""
            if not self._awaiting_head or self.owner is not owner:
                return data[first:]  # the head ended there (the rest is at least a byte)
        if self.owner is not None:
            self._unbodied_too_large()
        owner.up_flush()
        return b""

    def _parse_stopped(
        self,
        owner: ResponseSink,
        exc: httptools.HttpParserUpgrade | httptools.HttpParserError,
        data: bytes,
    ) -> bool:
        """The parser raised while parsing ``data``; False when reading is over for us."""
        if isinstance(exc, httptools.HttpParserUpgrade):
            self.owner = None
            self.keep_alive = False
            offset = int(exc.args[0]) if exc.args else len(data)
            owner.up_upgraded(data[offset:])
            return False
        cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else None
        if isinstance(cause, _StopParsingError):
            # HEAD: the message ended at its head; anything after it is a framing error.
            self.parser = httptools.HttpResponseParser(self)
        elif isinstance(cause, _StrayResponseError):
            self._stray_response()
        elif isinstance(cause, _TooManyFieldsError):
            self._protocol_error(f"{_OVER_LIMIT}too many header fields (over {self._max_fields})")
        else:
            self._protocol_error(str(cause or exc))
        return True

    def _stray_response(self) -> None:
        """A response began in the read that ended the one before it: nobody asked for it.

        No request sent since can have caused it, so the server broke framing: the
        connection closes and these bytes reach no one. An exchange handed the connection
        meanwhile (a pipelined request, or one waiting for the pool) has no byte of its
        response yet; it learns the connection is lost, so a request safe to send again
        goes out on a new connection and gets its own response.
        """
        owner, self.owner = self.owner, None
        self.keep_alive = False
        self.abort()
        if owner is not None:
            owner.up_lost(_INVALID + "a response nobody asked for")
            owner.up_flush()

    def _unbodied_too_large(self) -> None:
        limit = self._max_head_bytes
        if self._awaiting_head:
            self._protocol_error(f"{_OVER_LIMIT}response head over {limit} bytes")
        else:
            self._protocol_error(f"{_OVER_LIMIT}chunk framing or trailers over {limit} bytes")

    def eof_received(self) -> bool:
        if self.owner is not None and not self._in_head and self._close_delimited:
            # A close-delimited body ends with the connection.
            owner = self.owner
            self.keep_alive = False
            self.owner = None
            owner.up_end([])
            owner.up_flush()
        return False

    def _protocol_error(self, message: str) -> None:
        owner, self.owner = self.owner, None
        self.keep_alive = False
        if owner is not None:
            owner.up_lost(_INVALID + message)
        self.abort()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.owner is None or not self.got_bytes:
            # A second response in the read that ended the last one (``got_bytes`` is set
            # for each read and cleared by :meth:`begin`, so a new owner has had no read).
            raise _StrayResponseError
        self._headers = self._fields = []
        self._trailers = []
        self._in_head = True
        self._close_delimited = False

    def on_status(self, reason: bytes) -> None:
        self._reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        fields = self._fields  # a list chosen once per section, not per field
        fields.append((name, value))
        if len(fields) > self._max_fields:
            raise _TooManyFieldsError

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._fields = self._trailers
        status = self.parser.get_status_code()
        try:
            info = analyze(self._headers)
        except HeaderError as exc:
            raise ValueError(str(exc)) from None
        self._interim = 100 <= status < 200 and status != 101
        if not self._interim:
            self._awaiting_head = False
            self._unbodied = 0
            self.keep_alive = self.parser.should_keep_alive() and not info.proxy_connection_close
            self._close_delimited = (
                not info.chunked
                and info.content_length is None
                and status not in (204, 304)
                and not self._no_body
            )
            if self._close_delimited:
                self.keep_alive = False
        owner = self.owner
        if owner is not None:
            owner.up_head(status, self._reason, info)
        if self._no_body and not self._interim and status != 101:
            self._finish()
            raise _StopParsingError

    def on_body(self, body: bytes) -> None:
        self._unbodied = 0
        if body and self.owner is not None:
            self.owner.up_body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self.parser.get_status_code() == 101:
            return  # the parser raises HttpParserUpgrade next; the relay takes over
        self._finish()

    def _finish(self) -> None:
        owner, self.owner = self.owner, None
        self._close_delimited = False
        if owner is not None:
            owner.up_end(self._trailers)
