"""The dashboard's HTTP/1.1, as much as a browser needs (pure): one request per connection.

Requests are parsed by the common library's strict, bounded parser (the admin servers' own,
fuzzed by ``make fuzz``), with no body allowed; :func:`request_from` adds what the dashboard
needs (a percent-decoded path that must be a path, the query, headers by name).
:class:`Response` renders itself with the headers every answer carries. Every response closes
the connection, so there is no request pipelining to get wrong.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from gossamer_common.http_request_parser import BadRequest, RequestParser
from gossamer_common.http_request_parser import Request as ParsedRequest

MAX_HEAD = 16 * 1024
MAX_HEADERS = 100

#: Every response: no scripts or frames from anywhere, styles and images only from here,
#: nothing cached, no CORS header (so no other origin may read a page or an API answer).
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)

REASONS = {
    200: "OK",
    204: "No Content",
    302: "Found",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    414: "URI Too Long",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class BadRequestError(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # percent-decoded, without the query
    query: dict[str, str]
    headers: dict[str, list[str]]  # lower-case names

    def header(self, name: str) -> str | None:
        """The header's only value; None when absent or repeated."""
        values = self.headers.get(name, [])
        return values[0] if len(values) == 1 else None


def new_parser() -> RequestParser:
    """The common library's strict request parser, with the dashboard's bounds: a head of at
    most :data:`MAX_HEAD` bytes and no body at all."""
    return RequestParser(max_header_bytes=MAX_HEAD, max_body_bytes=0, max_fields=MAX_HEADERS)


def next_request(parser: RequestParser) -> Request | None:
    """The parser's next request as the dashboard sees it; None while more bytes are needed."""
    try:
        parsed = parser.next_request()
    except BadRequest as exc:
        raise BadRequestError(exc.reason, exc.status) from exc
    return None if parsed is None else request_from(parsed)


def parse_head(data: bytes) -> Request | None:
    parser = new_parser()
    parser.feed(data)
    return next_request(parser)


def request_from(parsed: ParsedRequest) -> Request:
    if not parsed.target.startswith("/"):
        raise BadRequestError("request target must be a path")
    try:
        path = urllib.parse.unquote(parsed.path, errors="strict")
        query = dict(urllib.parse.parse_qsl(parsed.query, max_num_fields=20))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequestError("malformed request target") from exc
    headers: dict[str, list[str]] = {}
    for name, value in parsed.headers:
        headers.setdefault(name, []).append(value)
    return Request(parsed.method, path, query, headers)


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    extra_headers: list[tuple[str, str]] = field(default_factory=list)

    def encode(self, *, head_only: bool = False) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Status')}"]
        lines.append(f"Content-Type: {self.content_type}")
        lines.append(f"Content-Length: {len(self.body)}")
        lines.append("Connection: close")
        lines += [f"{k}: {v}" for k, v in (*SECURITY_HEADERS, *self.extra_headers)]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


def text_response(status: int, message: str) -> Response:
    return Response(status, (message + "\n").encode(), "text/plain; charset=utf-8")


def redirect(location: str) -> Response:
    return Response(302, b"", "text/plain; charset=utf-8", [("Location", location)])
