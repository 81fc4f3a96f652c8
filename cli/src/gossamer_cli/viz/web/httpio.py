"""The dashboard's HTTP/1.1, as much as a browser needs (pure): one request per connection.

:func:`parse_head` reads a request head that the server has already bounded in size;
:class:`Response` renders itself with the headers every answer carries. Requests have no body
(GET and HEAD only), and every response closes the connection, so there is no request
pipelining to get wrong.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

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
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
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


def parse_head(head: bytes) -> Request:
    """``head`` is everything up to and including the blank line."""
    if len(head) > MAX_HEAD:
        raise BadRequestError("request head too large", 431)
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BadRequestError("request head is not ASCII") from exc
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequestError("malformed request line")
    method, target, _ = parts
    if not target.startswith("/"):
        raise BadRequestError("request target must be a path")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
            raise BadRequestError("malformed header line")
        headers.setdefault(name.lower(), []).append(value.strip())
        if sum(len(v) for v in headers.values()) > MAX_HEADERS:
            raise BadRequestError("too many headers", 431)
    if headers.get("transfer-encoding") or any(v != "0" for v in headers.get("content-length", [])):
        raise BadRequestError("requests to the dashboard have no body", 413)
    raw_path, _, raw_query = target.partition("?")
    try:
        path = urllib.parse.unquote(raw_path, errors="strict")
        query = dict(urllib.parse.parse_qsl(raw_query, max_num_fields=20))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequestError("malformed request target") from exc
    return Request(method, path, query, headers)


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
