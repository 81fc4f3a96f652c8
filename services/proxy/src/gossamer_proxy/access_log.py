"""Linkerd's HTTP access log for inbound requests (``config.linkerd.io/access-log``).

``LINKERD2_PROXY_ACCESS_LOG=apache|json`` turns it on; the proxy then writes one line per
inbound HTTP request (HTTP/1 and HTTP/2 alike) to stderr, beside its own logs. It is an
observer on the request seam (:mod:`.observe`); off, it is not registered, and the request
path pays nothing for it.

The fields are those of Linkerd's access-log span (``linkerd/http/access-log``):

- ``client.addr`` (``ip:port``), ``client.id`` (the mTLS client identity, or ``-``),
  ``timestamp`` (when the request head arrived, RFC 3339 UTC with nanoseconds), ``method``,
  ``uri`` (the request target as received, or ``scheme://authority/path`` for HTTP/2),
  ``version`` (``HTTP/1.1``, ``HTTP/2.0``), ``trace_id`` (``x-b3-traceid``, else
  ``x-request-id``, else ``x-amzn-trace-id``), ``request_bytes`` (the request's
  ``content-length``), ``status``, ``response_bytes`` (the response's ``content-length``),
  ``total_ns`` (request head to response head), ``processing_ns`` (the proxy's own share:
  request head until it was handed to the app, or the whole time for a response the proxy
  made itself), ``user_agent`` and ``host``.

``json`` writes them as one JSON object (numbers as strings except ``status``, as Linkerd
records them); ``apache`` writes Apache's Common Log Format the way Linkerd fills it:
``client.addr client.id - [timestamp] "method uri version" status``.

:class:`AccessLog` and :class:`AccessEntry` are sans-io: times are passed in (loop seconds
for durations, and a wall clock for the timestamp), lines go to a ``write`` callable.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Final

from .observe import ObservedRequest, RequestObserver

__all__ = [
    "AccessEntry",
    "AccessLog",
    "AccessLogObserver",
    "access_log_from_setting",
    "client_addr",
    "rfc3339_nanos",
]

Headers = Iterable[tuple[bytes, bytes]]

FORMATS: Final = ("apache", "json")
_TRACE_HEADERS: Final = (b"x-b3-traceid", b"x-request-id", b"x-amzn-trace-id")
_MAX_FIELD: Final = 2048  # a hostile header must not make one log line unbounded


def rfc3339_nanos(epoch_ns: int) -> str:
    """``2022-08-23T20:28:20.071809491Z`` for nanoseconds since the epoch."""
    seconds, nanos = divmod(epoch_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def _text(value: bytes) -> str:
    text = value.decode("latin-1")
    return text if len(text) <= _MAX_FIELD else text[:_MAX_FIELD]


class AccessEntry:
    """One request's fields; written once, when its response head is known."""

    __slots__ = (
        "_log",
        "client_addr",
        "client_id",
        "forwarded_at",
        "host",
        "method",
        "request_bytes",
        "response_bytes",
        "started_at",
        "timestamp",
        "trace_id",
        "uri",
        "user_agent",
        "version",
        "written",
    )

    def __init__(self, log: AccessLog) -> None:
        self._log = log
        self.client_addr = "-"
        self.client_id = "-"
        self.timestamp = ""
        self.method = ""
        self.uri = ""
        self.version = ""
        self.trace_id = ""
        self.request_bytes = ""
        self.response_bytes = ""
        self.user_agent = ""
        self.host = ""
        self.started_at = 0.0
        self.forwarded_at: float | None = None
        self.written = False

    def forwarded(self, now: float) -> None:
        """The request was handed to the application (its upstream)."""
        if self.forwarded_at is None:
            self.forwarded_at = now

    def respond(self, status: int, content_length: int | None, now: float) -> None:
        """The response head (``status``) is known: write the line (once)."""
        if self.written:
            return
        self.written = True
        if content_length is not None:
            self.response_bytes = str(content_length)
        total = max(now - self.started_at, 0.0)
        own = total if self.forwarded_at is None else max(self.forwarded_at - self.started_at, 0)
        self._log.write(self, status, round(total * 1e9), round(own * 1e9))


class AccessLog:
    """Starts entries for requests and writes finished ones in the configured format."""

    __slots__ = ("_clock_ns", "_json", "_write")

    def __init__(
        self,
        fmt: str,
        write: Callable[[str], None],
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown access log format {fmt!r}; expected apache or json")
        self._json = fmt == "json"
        self._write = write
        self._clock_ns = clock_ns

    def begin(
        self,
        *,
        client_addr: str,
        client_id: str | None,
        method: bytes,
        uri: bytes,
        version: str,
        headers: Headers,
        now: float,
    ) -> AccessEntry:
        """A request head arrived (``now`` on the loop clock)."""
        entry = AccessEntry(self)
        entry.client_addr = client_addr
        entry.client_id = client_id or "-"
        entry.timestamp = rfc3339_nanos(self._clock_ns())
        entry.method = _text(method)
        entry.uri = _text(uri)
        entry.version = version
        entry.started_at = now
        trace: dict[bytes, bytes] = {}
        for name, value in headers:
            lname = name.lower()
            if lname == b"content-length":
                entry.request_bytes = _text(value)
            elif lname == b"user-agent":
                entry.user_agent = _text(value)
            elif lname in (b"host", b":authority"):
                if not entry.host or lname == b"host":
                    entry.host = _text(value)
            elif lname in _TRACE_HEADERS:
                trace.setdefault(lname, value)
        for name in _TRACE_HEADERS:
            if name in trace:
                entry.trace_id = _text(trace[name])
                break
        return entry

    def write(self, entry: AccessEntry, status: int, total_ns: int, processing_ns: int) -> None:
        if self._json:
            line = json.dumps(
                {
                    "client.addr": entry.client_addr,
                    "client.id": entry.client_id,
                    "host": entry.host,
                    "method": entry.method,
                    "processing_ns": str(processing_ns),
                    "request_bytes": entry.request_bytes,
                    "response_bytes": entry.response_bytes,
                    "status": status,
                    "timestamp": entry.timestamp,
                    "total_ns": str(total_ns),
                    "trace_id": entry.trace_id,
                    "uri": entry.uri,
                    "user_agent": entry.user_agent,
                    "version": entry.version,
                },
                ensure_ascii=True,
            )
        else:
            request = _escape(f"{entry.method} {entry.uri} {entry.version}")
            line = (
                f'{entry.client_addr} {entry.client_id} - [{entry.timestamp}] "{request}" {status}'
            )

        self._write(line + "\n")


def _escape(text: str) -> str:
    """Quotes, backslashes and control bytes escaped, so one request stays one field."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return text.encode("unicode_escape").decode("ascii").replace('"', '\\"')


def _stderr_write(line: str) -> None:
    sys.stderr.write(line)
    sys.stderr.flush()


def access_log_from_setting(fmt: str | None) -> AccessLog | None:
    """The access log for ``LINKERD2_PROXY_ACCESS_LOG`` (``None``: off, free on the hot path)."""
    return None if fmt is None else AccessLog(fmt, _stderr_write)


class AccessLogObserver(RequestObserver):
    """The access log on the request-observer seam (:mod:`.observe`): every request it sees."""

    def __init__(self, log: AccessLog) -> None:
        self.log = log

    def on_request(self, request: ObservedRequest) -> object | None:
        return self.log.begin(
            client_addr=client_addr(request.source),
            client_id=request.client_id,
            method=request.method,
            uri=request.uri,
            version=request.version,
            headers=request.headers,
            now=request.started_at,
        )

    def on_forwarded(self, request: ObservedRequest, token: object) -> None:
        if isinstance(token, AccessEntry) and request.forwarded_at is not None:
            token.forwarded(request.forwarded_at)

    def on_response(self, request: ObservedRequest, token: object) -> None:
        if isinstance(token, AccessEntry) and request.response_at is not None:
            token.respond(request.status, request.content_length, request.response_at)


def client_addr(peer: tuple[str, int] | None) -> str:
    """``ip:port`` (``[v6]:port``) for a peer address (``-`` when unknown)."""
    if peer is None:
        return "-"
    host, port = peer
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
