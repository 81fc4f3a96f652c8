"""Proxy errors and the responses Linkerd synthesizes for them (sans-io).

Each failure the proxy can meet while forwarding a request has one :class:`ProxyError` kind.
The kind fixes the HTTP status, the gRPC status used instead for gRPC requests, whether the
client connection must close afterwards, and the ``l5d-proxy-error`` text. The mapping follows
linkerd-wire.md §9.10: timeouts and fail-fast give 504 / DEADLINE_EXCEEDED, load shedding
503 / UNAVAILABLE, endpoint and dispatch failures 502 / UNAVAILABLE. Error response bytes are
precomputed per kind, so the hot path only writes a ready ``bytes`` object.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .mesh.classify import GrpcStatus  # one definition of gRPC codes, shared

__all__ = [
    "GrpcStatus",
    "ProxyError",
    "ProxyErrorKind",
    "classify_connect_error",
    "grpc_error_headers",
    "h2_error_headers",
    "http1_error_bytes",
    "http1_error_response",
]


@dataclass(frozen=True, slots=True)
class _Spec:
    status: int
    reason: str
    grpc: GrpcStatus
    message: str
    close: bool


class ProxyErrorKind(enum.Enum):
    """Why the proxy could not forward a request, with Linkerd's response for it."""

    CONNECT_REFUSED = _Spec(502, "Bad Gateway", GrpcStatus.UNAVAILABLE, "connection refused", False)
    CONNECT_FAILED = _Spec(502, "Bad Gateway", GrpcStatus.UNAVAILABLE, "connect error", False)
    CONNECT_TIMEOUT = _Spec(
        504, "Gateway Timeout", GrpcStatus.DEADLINE_EXCEEDED, "connect timed out", False
    )
    UPSTREAM_CLOSED = _Spec(
        502,
        "Bad Gateway",
        GrpcStatus.UNAVAILABLE,
        "connection closed before message completed",
        False,
    )
    UPSTREAM_PROTOCOL = _Spec(
        502, "Bad Gateway", GrpcStatus.UNAVAILABLE, "invalid HTTP response from server", False
    )
    UPSTREAM_RESET = _Spec(502, "Bad Gateway", GrpcStatus.UNAVAILABLE, "stream reset", False)
    RESPONSE_TIMEOUT = _Spec(
        504, "Gateway Timeout", GrpcStatus.DEADLINE_EXCEEDED, "response timed out", False
    )
    FAIL_FAST = _Spec(
        504, "Gateway Timeout", GrpcStatus.DEADLINE_EXCEEDED, "service in fail-fast", False
    )
    LOAD_SHED = _Spec(
        503, "Service Unavailable", GrpcStatus.UNAVAILABLE, "service unavailable", False
    )
    LOOP = _Spec(508, "Loop Detected", GrpcStatus.UNAVAILABLE, "proxy loop detected", True)
    SHUTTING_DOWN = _Spec(
        503, "Service Unavailable", GrpcStatus.UNAVAILABLE, "proxy is shutting down", True
    )
    # Inbound policy (linkerd-wire.md §9 step 5, §9 item 10).
    FORBIDDEN = _Spec(
        403, "Forbidden", GrpcStatus.PERMISSION_DENIED, "unauthorized request on route", False
    )
    ROUTE_NOT_FOUND = _Spec(404, "Not Found", GrpcStatus.NOT_FOUND, "no route found", False)
    # HTTPLocalRateLimitPolicy refused the request (the detail says which limit).
    RATE_LIMITED = _Spec(
        429, "Too Many Requests", GrpcStatus.RESOURCE_EXHAUSTED, "rate limited", False
    )
    # Outbound policy: the matching HTTPRoute rule has no backend with a non-zero weight
    # (Gateway API requires a 500 then).
    NO_BACKENDS = _Spec(
        500, "Internal Server Error", GrpcStatus.UNAVAILABLE, "no backends available", False
    )
    IDENTITY_MISMATCH = _Spec(
        502, "Bad Gateway", GrpcStatus.UNAVAILABLE, "server identity mismatch", False
    )
    # Client-side faults: the request itself was unacceptable.
    BAD_REQUEST = _Spec(400, "Bad Request", GrpcStatus.INTERNAL, "invalid HTTP request", True)
    HEAD_TOO_LARGE = _Spec(
        431,
        "Request Header Fields Too Large",
        GrpcStatus.RESOURCE_EXHAUSTED,
        "request head too large",
        True,
    )
    HEAD_TIMEOUT = _Spec(
        408, "Request Timeout", GrpcStatus.DEADLINE_EXCEEDED, "request head timed out", True
    )

    @property
    def status(self) -> int:
        return self.value.status

    @property
    def grpc_status(self) -> GrpcStatus:
        return self.value.grpc

    @property
    def message(self) -> str:
        return self.value.message

    @property
    def closes_connection(self) -> bool:
        return self.value.close


class ProxyError(Exception):
    """A forwarding failure of a known kind, with optional detail for logs and the header."""

    def __init__(self, kind: ProxyErrorKind, detail: str | None = None) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind.message}: {detail}" if detail else kind.message)


def _header_safe(text: str) -> str:
    return "".join(ch if 0x20 <= ord(ch) < 0x7F else " " for ch in text)


def http1_error_response(
    kind: ProxyErrorKind, *, close: bool = False, detail: str | None = None
) -> bytes:
    """The full HTTP/1.1 response for ``kind``: status, ``l5d-proxy-error``, empty body.

    ``close`` forces ``connection: close`` even for kinds that keep the connection.
    """
    spec = kind.value
    message = _header_safe(f"{spec.message}: {detail}" if detail else spec.message)
    lines = [
        f"HTTP/1.1 {spec.status} {spec.reason}\r\n",
        f"l5d-proxy-error: {message}\r\n",
        "content-length: 0\r\n",
    ]
    if close or spec.close:
        lines.append("connection: close\r\nl5d-proxy-connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("ascii")


_PRECOMPUTED: dict[tuple[ProxyErrorKind, bool], bytes] = {
    (kind, close): http1_error_response(kind, close=close)
    for kind in ProxyErrorKind
    for close in (False, True)
}


def http1_error_bytes(kind: ProxyErrorKind, *, close: bool = False) -> bytes:
    """Precomputed :func:`http1_error_response` without detail (the hot path)."""
    return _PRECOMPUTED[(kind, close)]


def grpc_error_headers(kind: ProxyErrorKind, detail: str | None = None) -> list[tuple[str, str]]:
    """HTTP/2 trailers-only response headers for a gRPC request that failed with ``kind``."""
    spec = kind.value
    message = _header_safe(f"{spec.message}: {detail}" if detail else spec.message)
    return [
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-status", str(int(spec.grpc))),
        ("grpc-message", message),
        ("l5d-proxy-error", message),
    ]


def h2_error_headers(kind: ProxyErrorKind, detail: str | None = None) -> list[tuple[str, str]]:
    """HTTP/2 response headers (no body) for a non-gRPC request that failed with ``kind``."""
    spec = kind.value
    message = _header_safe(f"{spec.message}: {detail}" if detail else spec.message)
    return [
        (":status", str(spec.status)),
        ("content-length", "0"),
        ("l5d-proxy-error", message),
    ]


def classify_connect_error(exc: BaseException) -> ProxyErrorKind:
    """Map an exception from opening an upstream connection to an error kind."""
    if isinstance(exc, ProxyError):
        return exc.kind
    if isinstance(exc, TimeoutError):
        return ProxyErrorKind.CONNECT_TIMEOUT
    if isinstance(exc, ConnectionRefusedError):
        return ProxyErrorKind.CONNECT_REFUSED
    return ProxyErrorKind.CONNECT_FAILED
