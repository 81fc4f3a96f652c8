"""A small sans-io HTTP/1.x request parser for the admin endpoints.

Bytes go in with :meth:`RequestParser.feed`; complete :class:`Request` events come
out of :meth:`RequestParser.next_request`. It never touches a socket or a clock,
so every malformed-input path is a plain unit test. It is deliberately strict:
the admin port serves probes, scrapes and a few operator calls, and other pods can
reach it, so anything odd is answered with a 4xx and the connection is closed rather
than guessed at.

Supported: request line + headers, ``Content-Length`` and ``chunked`` request bodies,
HTTP/1.0 and HTTP/1.1 keep-alive, pipelining.

Parsing is incremental and linear: the parser is a state machine that remembers where
it stopped, so every byte is examined a bounded number of times however the input is
split (:attr:`RequestParser.scanned` counts the bytes searched, for tests). Everything
is bounded, each with its own answer:

- the request line (``max_line_bytes``; 414), each header or trailer line
  (``max_line_bytes``; 431), the whole header section (``max_header_bytes``; 431), the
  number of fields (``max_fields``; 431) and the trailer section (``max_header_bytes``;
  431);
- a chunk-size line, extensions included (``max_chunk_line_bytes``; 400);
- the body (``max_body_bytes``; 413), decoded, whatever its framing.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = ["BadRequest", "Request", "RequestParser"]

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_TARGET = re.compile(rb"^[\x21-\x7e]+$")
_FIELD_VALUE = re.compile(rb"^[\t\x20-\x7e\x80-\xff]*$")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,8}")
_VERSIONS = {b"HTTP/1.1": (1, 1), b"HTTP/1.0": (1, 0)}


class BadRequest(Exception):  # noqa: N818 - it names the response it produces
    """The peer sent something we will not process; ``status`` is what to answer."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    path: str
    query: str
    version: tuple[int, int]
    headers: tuple[tuple[str, str], ...]  # names lower-cased, order kept
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower-case), or None."""
        for k, v in self.headers:
            if k == name:
                return v
        return None

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in (self.header("connection") or "").split(",")}
        if self.version == (1, 0):
            return "keep-alive" in tokens
        return "close" not in tokens


class _State(enum.Enum):
    REQUEST_LINE = enum.auto()
    HEADERS = enum.auto()
    BODY = enum.auto()  # content-length: ``_remaining`` bytes left
    CHUNK_SIZE = enum.auto()
    CHUNK_DATA = enum.auto()  # ``_remaining`` bytes of the chunk left, then CRLF
    TRAILERS = enum.auto()


class RequestParser:
    """Incremental parser; raises :class:`BadRequest` and then refuses further input."""

    def __init__(
        self,
        *,
        max_header_bytes: int = 16 * 1024,
        max_body_bytes: int = 1 << 20,
        max_line_bytes: int = 8 * 1024,
        max_chunk_line_bytes: int = 1024,
        max_fields: int = 100,
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.max_line_bytes = max_line_bytes
        self.max_chunk_line_bytes = max_chunk_line_bytes
        self.max_fields = max_fields
        #: Bytes searched for line ends so far (a work counter: linear in the input).
        self.scanned = 0
        self._buf = bytearray()
        self._pos = 0  # start of the unconsumed input in _buf
        self._scan = 0  # where the search for the current line's CRLF resumes
        self._failed: BadRequest | None = None
        self._reset()

    def _reset(self) -> None:
        self._state = _State.REQUEST_LINE
        self._head_bytes = 0
        self._request_line: tuple[str, str, tuple[int, int]] | None = None
        self._headers: list[tuple[str, str]] = []
        self._body = bytearray()
        self._remaining = 0

    @property
    def buffered(self) -> int:
        """Bytes received and not yet part of a returned request (at least 1 mid-request)."""
        pending = len(self._buf) - self._pos
        if self._state is not _State.REQUEST_LINE:
            pending += max(1, self._head_bytes + len(self._body))
        return pending

    def feed(self, data: bytes) -> None:
        if self._failed is None:
            self._buf += data

    def next_request(self) -> Request | None:
        """The next complete request, or None if more bytes are needed."""
        if self._failed is not None:
            raise self._failed
        try:
            request = self._advance()
        except BadRequest as e:
            self._failed = e
            self._buf.clear()
            self._pos = self._scan = 0
            raise
        if self._pos == len(self._buf) or (self._pos > 65536 and self._pos * 2 > len(self._buf)):
            self._compact()  # amortized: each byte is moved at most once per halving
        return request

    def _compact(self) -> None:
        del self._buf[: self._pos]
        self._scan -= self._pos
        self._pos = 0

    def _line(self, limit: int, error: BadRequest) -> bytes | None:
        """The next CRLF-terminated line (without CRLF), or None until it is complete."""
        buf, start = self._buf, self._pos
        scan = max(self._scan, start)
        end = buf.find(b"\r\n", scan, start + limit + 2)
        stop = len(buf) if end < 0 else end + 2
        self.scanned += min(stop, start + limit + 2) - scan
        if end < 0:
            if len(buf) - start > limit + 1:
                raise error
            self._scan = max(start, len(buf) - 1)  # a CR may be the last byte so far
            return None
        self._pos = self._scan = end + 2
        return bytes(buf[start:end])

    def _advance(self) -> Request | None:
        while True:
            state = self._state
            if state is _State.REQUEST_LINE:
                line = self._line(self.max_line_bytes, BadRequest("request line too long", 414))
                if line is None:
                    return None
                if not line:
                    continue  # stray CRLFs between pipelined requests (RFC 9112 §2.2)
                self._head_bytes = len(line) + 2
                self._request_line = _parse_request_line(line)
                self._state = _State.HEADERS
            elif state is _State.HEADERS:
                line = self._header_line()
                if line is None:
                    return None
                if line:
                    self._headers.append(_parse_field(line))
                    if len(self._headers) > self.max_fields:
                        raise BadRequest("too many header fields", 431)
                    continue
                request = self._start_body()
                if request is not None:
                    return request
            elif state is _State.BODY:
                available = min(len(self._buf) - self._pos, self._remaining)
                self._body += self._buf[self._pos : self._pos + available]
                self._pos += available
                self._remaining -= available
                if self._remaining:
                    return None
                return self._finish()
            elif state is _State.CHUNK_SIZE:
                line = self._line(self.max_chunk_line_bytes, BadRequest("chunk size line too long"))
                if line is None:
                    return None
                size_text = line.split(b";", 1)[0].strip(b" \t")
                if not _CHUNK_SIZE.fullmatch(size_text):
                    raise BadRequest(f"invalid chunk size {size_text[:16]!r}")
                size = int(size_text, 16)
                if len(self._body) + size > self.max_body_bytes:
                    raise BadRequest("request body exceeds the limit", 413)
                if size == 0:
                    self._head_bytes = 0  # the trailer section gets its own budget
                    self._state = _State.TRAILERS
                else:
                    self._remaining = size
                    self._state = _State.CHUNK_DATA
            elif state is _State.CHUNK_DATA:
                if self._remaining:
                    available = min(len(self._buf) - self._pos, self._remaining)
                    self._body += self._buf[self._pos : self._pos + available]
                    self._pos += available
                    self._remaining -= available
                    if self._remaining:
                        return None
                if len(self._buf) - self._pos < 2:
                    return None
                if self._buf[self._pos : self._pos + 2] != b"\r\n":
                    raise BadRequest("chunk data not followed by CRLF")
                self._pos += 2
                self._scan = self._pos
                self._state = _State.CHUNK_SIZE
            else:  # trailers: checked for size and syntax, then dropped
                line = self._header_line(trailer=True)
                if line is None:
                    return None
                if not line:
                    return self._finish()
                _parse_field(line)

    def _header_line(self, *, trailer: bool = False) -> bytes | None:
        what = "trailer" if trailer else "header"
        room = self.max_header_bytes - self._head_bytes - 2
        if room < 0:
            raise BadRequest(f"request {what} section too large", 431)
        limit = min(self.max_line_bytes, room)
        too_long = (
            BadRequest(f"request {what} line too long", 431)
            if limit == self.max_line_bytes
            else BadRequest(f"request {what} section too large", 431)
        )
        line = self._line(limit, too_long)
        if line is not None:
            self._head_bytes += len(line) + 2
        return line

    def _start_body(self) -> Request | None:
        assert self._request_line is not None
        _, _, version = self._request_line
        headers = self._headers
        if version == (1, 1) and not any(k == "host" for k, _ in headers):
            raise BadRequest("missing Host header")
        if sum(1 for k, _ in headers if k == "host") > 1:
            raise BadRequest("more than one Host header")
        te = [v for k, v in headers if k == "transfer-encoding"]
        cl = [v for k, v in headers if k == "content-length"]
        self._scan = self._pos
        if te:
            if cl:
                raise BadRequest("both Transfer-Encoding and Content-Length")
            if version == (1, 0) or ",".join(te).strip().lower() != "chunked":
                raise BadRequest(f"unsupported Transfer-Encoding {','.join(te)!r}", 501)
            self._state = _State.CHUNK_SIZE
            return None
        length = _content_length(cl)
        if length > self.max_body_bytes:
            raise BadRequest(f"request body of {length} bytes exceeds the limit", 413)
        if length == 0:
            return self._finish()
        self._remaining = length
        self._state = _State.BODY
        return None

    def _finish(self) -> Request:
        assert self._request_line is not None
        method, target, version = self._request_line
        headers, body = tuple(self._headers), bytes(self._body)
        self._scan = self._pos
        self._reset()
        path, _, query = target.partition("?")
        return Request(method, target, path, query, version, headers, body)


def _parse_request_line(line: bytes) -> tuple[str, str, tuple[int, int]]:
    parts = line.split(b" ")
    if len(parts) != 3:
        raise BadRequest("malformed request line")
    method, target, version_text = parts
    if not _TOKEN.match(method):
        raise BadRequest("malformed request method")
    if not _TARGET.match(target):
        raise BadRequest("malformed request target")
    version = _VERSIONS.get(version_text)
    if version is None:
        if version_text.startswith(b"HTTP/"):
            raise BadRequest("unsupported HTTP version", 505)
        raise BadRequest("malformed request line")
    return method.decode("ascii"), target.decode("ascii"), version


def _parse_field(line: bytes) -> tuple[str, str]:
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.match(name):
        raise BadRequest("malformed header field")  # also rejects obs-fold continuations
    value = value.strip(b" \t")
    if not _FIELD_VALUE.match(value):
        raise BadRequest("invalid character in header value")
    return name.decode("ascii").lower(), value.decode("latin-1")


def _content_length(values: list[str]) -> int:
    if not values:
        return 0
    distinct = {v.strip() for value in values for v in value.split(",")}
    if len(distinct) != 1:
        raise BadRequest("conflicting Content-Length values")
    text = distinct.pop()
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise BadRequest(f"invalid Content-Length {text!r}")
    return int(text)
