"""The proxy's client side of HTTP/1.1: one pooled upstream connection.

An :class:`Http1Upstream` parses responses with httptools and reports them, event by event,
to whichever :class:`ResponseSink` (a client connection's current exchange) owns it. Between
exchanges it sits in the :class:`~gossamer_proxy.pool.Pool`; if the server closes it there, it
leaves the pool at once.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

import httptools

from ..config import Endpoint
from ..metrics import TcpStats
from .headers import HeaderError, Headers, MessageInfo, analyze

__all__ = ["Http1Upstream", "ResponseSink"]


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


class Http1Upstream(asyncio.Protocol):
    __slots__ = (
        "_close_delimited",
        "_closed",
        "_fields",
        "_headers",
        "_in_head",
        "_interim",
        "_no_body",
        "_reason",
        "_trailers",
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

    def __init__(self, endpoint: Endpoint, stats: TcpStats | None) -> None:
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
        if self.stats is not None:
            self.stats.read.value += len(data)
        if self.owner is None:
            # Bytes on an idle connection: the server broke framing; never reuse it.
            self.keep_alive = False
            self.close()
            return
        self.got_bytes = True
        owner = self.owner
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.owner = None
            self.keep_alive = False
            offset = int(upgrade.args[0]) if upgrade.args else len(data)
            owner.up_upgraded(data[offset:])
            return
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _StopParsingError):
                # HEAD: the message ended at its head; anything after it is a framing error.
                self.parser = httptools.HttpResponseParser(self)
            else:
                self._protocol_error(str(exc.__context__ or exc))
        except httptools.HttpParserError as exc:
            self._protocol_error(str(exc))
        owner.up_flush()

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
            owner.up_lost(f"invalid HTTP response: {message}")
        self.abort()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._headers = self._fields = []
        self._trailers = []
        self._in_head = True
        self._close_delimited = False

    def on_status(self, reason: bytes) -> None:
        self._reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name, value))  # a list chosen once per section, not per field

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
