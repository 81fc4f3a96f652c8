"""A small sans-io HTTP/1.x request parser for the admin endpoints.

Bytes go in with :meth:`RequestParser.feed`; complete :class:`Request` events come
out of :meth:`RequestParser.next_request`. It never touches a socket or a clock,
so every malformed-input path is a plain unit test. It is deliberately strict:
the admin port serves probes, scrapes and a few operator calls, so anything odd
is answered with a 4xx and the connection is closed rather than guessed at.

Supported: request line + headers (bounded), ``Content-Length`` and ``chunked``
request bodies (bounded), HTTP/1.0 and HTTP/1.1 keep-alive, pipelining.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["BadRequest", "Request", "RequestParser"]

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_TARGET = re.compile(rb"^[\x21-\x7e]+$")
_FIELD_VALUE = re.compile(rb"^[\t\x20-\x7e\x80-\xff]*$")
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


class RequestParser:
    """Incremental parser; raises :class:`BadRequest` and then refuses further input."""

    def __init__(self, *, max_header_bytes: int = 16 * 1024, max_body_bytes: int = 1 << 20):
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._buf = bytearray()
        self._failed: BadRequest | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_request(self) -> Request | None:
        """The next complete request, or None if more bytes are needed."""
        if self._failed is not None:
            raise self._failed
        try:
            return self._parse()
        except BadRequest as e:
            self._failed = e
            raise

    def _parse(self) -> Request | None:
        buf = self._buf
        # Tolerate stray CRLFs between pipelined requests (RFC 9112 §2.2).
        while buf[:2] == b"\r\n":
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self.max_header_bytes:
                raise BadRequest("request header section too large", 431)
            return None
        if end + 4 > self.max_header_bytes:
            raise BadRequest("request header section too large", 431)
        head = bytes(buf[:end])
        method, target, version, headers = _parse_head(head)
        body_start = end + 4
        te = [v for k, v in headers if k == "transfer-encoding"]
        cl = [v for k, v in headers if k == "content-length"]
        if te:
            if cl:
                raise BadRequest("both Transfer-Encoding and Content-Length")
            if version == (1, 0) or ",".join(te).strip().lower() != "chunked":
                raise BadRequest(f"unsupported Transfer-Encoding {','.join(te)!r}", 501)
            decoded = self._chunked(body_start)
            if decoded is None:
                return None
            body, consumed = decoded
        else:
            length = _content_length(cl)
            if length > self.max_body_bytes:
                raise BadRequest(f"request body of {length} bytes exceeds the limit", 413)
            if len(buf) - body_start < length:
                return None
            body = bytes(buf[body_start : body_start + length])
            consumed = body_start + length
        del buf[:consumed]
        path, _, query = target.partition("?")
        return Request(method, target, path, query, version, headers, body)

    def _chunked(self, pos: int) -> tuple[bytes, int] | None:
        buf = self._buf
        body = bytearray()
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                if len(buf) - pos > 1024:
                    raise BadRequest("chunk size line too long")
                return None
            size_text = bytes(buf[pos:line_end]).split(b";", 1)[0].strip()
            if not size_text or not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", size_text):
                raise BadRequest(f"invalid chunk size {size_text!r}")
            size = int(size_text, 16)
            pos = line_end + 2
            if size == 0:
                # Trailer section: skip fields until the empty line.
                while True:
                    line_end = buf.find(b"\r\n", pos)
                    if line_end < 0:
                        if len(buf) - pos > self.max_header_bytes:
                            raise BadRequest("chunked trailer too large", 431)
                        return None
                    if line_end == pos:
                        return bytes(body), line_end + 2
                    pos = line_end + 2
            if len(body) + size > self.max_body_bytes:
                raise BadRequest("request body exceeds the limit", 413)
            if len(buf) < pos + size + 2:
                return None
            body += buf[pos : pos + size]
            if buf[pos + size : pos + size + 2] != b"\r\n":
                raise BadRequest("chunk data not followed by CRLF")
            pos += size + 2


def _parse_head(head: bytes) -> tuple[str, str, tuple[int, int], tuple[tuple[str, str], ...]]:
    request_line, *field_lines = head.split(b"\r\n")
    parts = request_line.split(b" ")
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
    headers: list[tuple[str, str]] = []
    for line in field_lines:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            raise BadRequest("malformed header field")  # also rejects obs-fold continuations
        value = value.strip(b" \t")
        if not _FIELD_VALUE.match(value):
            raise BadRequest("invalid character in header value")
        headers.append((name.decode("ascii").lower(), value.decode("latin-1")))
    if version == (1, 1) and not any(k == "host" for k, _ in headers):
        raise BadRequest("missing Host header")
    return method.decode("ascii"), target.decode("ascii"), version, tuple(headers)


def _content_length(values: list[str]) -> int:
    if not values:
        return 0
    distinct = {v.strip() for value in values for v in value.split(",")}
    if len(distinct) != 1:
        raise BadRequest("conflicting Content-Length values")
    text = distinct.pop()
    if not text.isdigit() or len(text) > 18:
        raise BadRequest(f"invalid Content-Length {text!r}")
    return int(text)
