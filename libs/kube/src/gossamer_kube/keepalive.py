"""A lean keep-alive HTTP/1.1 path for small, frequent JSON POSTs (TokenReview).

Why: the identity service asks the apiserver for one TokenReview per certificate. Through
aiohttp each such POST costs the identity process about as much CPU as the ECDSA work of the
certificate itself (request and response objects, multidict headers, tracing hooks, connector
bookkeeping). Here a request is one pre-assembled ``bytes`` write on a pooled connection and
the response is read by httptools' C parser into a status and a bounded body.

:class:`ResponseReader` is sans-io (bytes in, a :class:`Response` out); :class:`PostPool`
owns the connections. Everything else (watches, lists, patches) stays on aiohttp.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

__all__ = [
    "MAX_RESPONSE_BODY",
    "MAX_RESPONSE_HEAD",
    "PostPool",
    "Response",
    "ResponseError",
    "ResponseReader",
    "build_post",
    "request_head",
]

#: TokenReview responses are about 2 KiB; anything near this is not an apiserver talking.
MAX_RESPONSE_BODY = 1 << 20
MAX_RESPONSE_HEAD = 64 * 1024
#: Idle connections kept open; more concurrent requests open more, closed when returned.
DEFAULT_MAX_IDLE = 64


class ResponseError(Exception):
    """The peer sent something that is not an acceptable HTTP/1.1 response."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    keep_alive: bool


class ResponseReader:
    """Parses exactly one HTTP/1.1 response from fed bytes (sans-io).

    :meth:`feed` returns the :class:`Response` once it is complete, else ``None``; it raises
    :class:`ResponseError` on malformed input, on a head larger than ``max_head`` or a body
    larger than ``max_body``, and on bytes after the response (no pipelining is in use).
    """

    __slots__ = (
        "_body",
        "_body_size",
        "_done",
        "_head_size",
        "_headers_done",
        "_keep_alive",
        "_max_body",
        "_max_head",
        "_messages",
        "_parser",
        "_status",
        "response",
    )

    def __init__(self, *, max_head: int = MAX_RESPONSE_HEAD, max_body: int = MAX_RESPONSE_BODY):
        self._max_head = max_head
        self._max_body = max_body
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_size = 0
        self._headers_done = False
        self._done = False
        self._messages = 0
        self._keep_alive = False
        self._status = 0
        self.response: Response | None = None
        self._parser = httptools.HttpResponseParser(self)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._messages += 1
        if self._messages > 1:
            raise ResponseError("bytes after the end of the response")

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._max_body:
            raise ResponseError(f"response body larger than {self._max_body} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        # Only meaningful inside the callbacks: the parser resets once the message ends.
        self._keep_alive = self._parser.should_keep_alive()
        self._status = self._parser.get_status_code()
        self._done = True

    def feed(self, data: bytes) -> Response | None:
        if self.response is not None:
            if data:
                raise ResponseError("bytes after the end of the response")
            return self.response
        if not self._headers_done:
            self._head_size += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise ResponseError("unexpected protocol upgrade") from None
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, ResponseError):
                raise cause from None
            raise ResponseError(f"malformed HTTP response: {exc}") from None
        if not self._headers_done and self._head_size > self._max_head:
            raise ResponseError(f"response head larger than {self._max_head} bytes")
        if not self._done:
            return None
        status = self._status
        if status < 200:  # 1xx interim responses are not sent to a request without Expect
            raise ResponseError(f"unexpected interim response {status}")
        self.response = Response(
            status=status, body=b"".join(self._body), keep_alive=self._keep_alive
        )
        return self.response

    def feed_eof(self) -> Response | None:
        """The peer closed: the response if it was complete, else ``None``.

        A body delimited only by the close (no length, not chunked) never completes: the
        apiserver always sends a length or chunks, and a truncated answer must not pass.
        """
        return self.response


_FORBIDDEN_IN_HEAD = re.compile(r"[\r\n\0]")


def request_head(host: str, headers: Sequence[tuple[str, str]]) -> str:
    """The header lines every POST of a pool shares (Host first), CRLF-terminated."""
    lines = [f"Host: {host}"] + [f"{name}: {value}" for name, value in headers]
    for line in lines:
        if _FORBIDDEN_IN_HEAD.search(line) or ":" not in line.split(" ", 1)[0]:
            raise ValueError(f"invalid request header line {line!r}")
    return "".join(line + "\r\n" for line in lines)


def build_post(path: str, head: str, body: bytes) -> bytes:
    """The request line, the shared ``head`` (see :func:`request_head`) and ``body``, one write."""
    if not path.startswith("/") or _FORBIDDEN_IN_HEAD.search(path) or " " in path:
        raise ValueError(f"invalid request path {path!r}")
    text = f"POST {path} HTTP/1.1\r\n{head}Content-Length: {len(body)}\r\n\r\n"
    return text.encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One connection; at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self.closed = False
        self._reader: ResponseReader | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self.received_any = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's SSL transport is not an asyncio.Transport subclass; it writes all the same.
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, reader: ResponseReader) -> asyncio.Future[Response]:
        assert self.transport is not None
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._reader, self._waiter, self.received_any = reader, waiter, False
        self.transport.write(request)
        return waiter

    def data_received(self, data: bytes) -> None:
        reader, waiter = self._reader, self._waiter
        if reader is None or waiter is None or waiter.done():
            self._fail(ResponseError("response bytes with no request outstanding"))
            return
        self.received_any = True
        try:
            response = reader.feed(data)
        except ResponseError as exc:
            self._fail(exc)
            return
        if response is not None:
            self._reader = self._waiter = None
            waiter.set_result(response)

    def eof_received(self) -> bool | None:
        reader, waiter = self._reader, self._waiter
        if reader is not None and waiter is not None and not waiter.done():
            response = reader.feed_eof()
            if response is not None:
                self._reader = self._waiter = None
                waiter.set_result(Response(response.status, response.body, keep_alive=False))
        self.closed = True
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionResetError(f"connection closed: {exc!r}" if exc else "closed"))

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        waiter = self._waiter
        self._reader = self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class PostPool:
    """Keep-alive connections to one HTTP(S) server for small POSTs; one request each at a time.

    A request on a reused connection that the server closed before answering (idle timeout)
    is sent once more on a new connection, so callers must only send requests that are safe
    to repeat, such as reviews that change nothing on the server.
    """

    def __init__(
        self,
        server: str,
        *,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None = None,
        max_idle: int = DEFAULT_MAX_IDLE,
        max_body: int = MAX_RESPONSE_BODY,
    ) -> None:
        url = urlsplit(server)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"server must be an http(s) URL, got {server!r}")
        if url.scheme == "https" and ssl_context is None:
            raise ValueError("an https server needs an SSL context")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._host_header = url.netloc.rsplit("@", 1)[-1]
        self._prefix = url.path.rstrip("/")
        self._ssl = ssl_context if url.scheme == "https" else None
        self._server_hostname = (server_hostname or self._host) if self._ssl else None
        self._idle: deque[_Connection] = deque()
        self._max_idle = max_idle
        self._max_body = max_body
        self._closed = False
        self._head_for: tuple[tuple[str, str], ...] | None = None
        self._head = ""

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(
            _Connection,
            self._host,
            self._port,
            ssl=self._ssl,
            server_hostname=self._server_hostname,
        )
        return protocol

    async def post(self, path: str, body: bytes, headers: Sequence[tuple[str, str]]) -> Response:
        """POST ``body`` to ``path``; the response (any status). Raises OSError/ResponseError."""
        if self._closed:
            raise RuntimeError("pool is closed")
        key = tuple(headers)
        if key != self._head_for:  # the same headers every time, until a token rotates
            self._head, self._head_for = request_head(self._host_header, key), key
        request = build_post(self._prefix + path, self._head, body)
        while self._idle:
            conn = self._idle.pop()
            if conn.closed:
                continue
            try:
                return await self._exchange(conn, request)
            except ConnectionResetError:
                if conn.received_any:
                    raise
                # The server closed an idle connection as we reused it: try a fresh one.
                break
        return await self._exchange(await self._connect(), request)

    async def _exchange(self, conn: _Connection, request: bytes) -> Response:
        try:
            response = await conn.send(request, ResponseReader(max_body=self._max_body))
        except BaseException:
            conn.close()  # cancelled or failed mid-exchange: the connection's state is unknown
            raise
        if (
            response.keep_alive
            and not conn.closed
            and not self._closed
            and len(self._idle) < self._max_idle
        ):
            self._idle.append(conn)
            return response
        conn.close()
        return response

    def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
