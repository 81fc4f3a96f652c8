"""The ``l5d-*`` headers: which the proxy honours, which it strips, which it writes (sans-io).

From linkerd-wire.md §9 (inbound step 5, outbound steps 5 and 9) and §10:

Outbound requests (app → proxy):

* ``l5d-retry-http``, ``l5d-retry-grpc``, ``l5d-retry-limit``, ``l5d-retry-timeout``,
  ``l5d-timeout`` / ``l5d-request-timeout``, ``l5d-response-timeout``: honoured only when
  the route allows l5d request headers (``allow_l5d_request_headers``), **always stripped**;
* ``l5d-require-id``: the server's mTLS identity must equal the value (502 otherwise);
  stripped;
* ``l5d-dst-override``: in ingress mode, route by this authority instead of the original
  destination; stripped;
* ``l5d-dst-canonical``: legacy logical destination; stripped when an authority override
  rewrites the destination.

Inbound requests (peer proxy → app): any ``l5d-client-id`` from the wire is removed and,
if the client presented a mesh identity, replaced by it; ``l5d-orig-proto`` marks an
HTTP/1 request that a client proxy upgraded to HTTP/2 and is removed as the request is
downgraded back.

Responses the proxy synthesizes carry ``l5d-proxy-error`` (and ``l5d-proxy-connection:
close`` when the connection is done). Malformed values never fail a request: the header is
dropped and the problem reported in :attr:`OutboundDirectives.errors`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from gossamer_proxy.mesh.classify import GrpcStatus

__all__ = [
    "CLIENT_ID",
    "DIRECTIVES",
    "ORIG_PROTO",
    "REQUIRE_ID",
    "OrigProto",
    "OutboundDirectives",
    "decode_orig_proto",
    "encode_orig_proto",
    "inbound_request_headers",
    "outbound_request_headers",
    "parse_duration",
    "parse_orig_proto",
    "proxy_error_headers",
    "required_identity_error",
]

Headers = list[tuple[bytes, bytes]]

CLIENT_ID = b"l5d-client-id"
ORIG_PROTO = b"l5d-orig-proto"
REQUIRE_ID = b"l5d-require-id"
DST_OVERRIDE = b"l5d-dst-override"
DST_CANONICAL = b"l5d-dst-canonical"
PROXY_ERROR = b"l5d-proxy-error"
PROXY_CONNECTION = b"l5d-proxy-connection"

RETRY_HTTP = b"l5d-retry-http"
RETRY_GRPC = b"l5d-retry-grpc"
RETRY_LIMIT = b"l5d-retry-limit"
RETRY_TIMEOUT = b"l5d-retry-timeout"
TIMEOUT = b"l5d-timeout"
REQUEST_TIMEOUT = b"l5d-request-timeout"
RESPONSE_TIMEOUT = b"l5d-response-timeout"

#: The request directives (``l5d-retry-*``, ``l5d-*-timeout``): honoured outbound only on
#: routes that allow them, and never forwarded by an outbound proxy.
DIRECTIVES = frozenset(
    {RETRY_HTTP, RETRY_GRPC, RETRY_LIMIT, RETRY_TIMEOUT, TIMEOUT, REQUEST_TIMEOUT, RESPONSE_TIMEOUT}
)
_OVERRIDES = DIRECTIVES

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h)\s*$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``"250ms"`` → 0.25; raises :class:`ValueError` for a value without a unit."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 500ms, 2s, 1m)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _ascii_digits(text: str) -> bool:
    """``str.isdigit`` alone accepts digits such as ``²`` that ``int`` then refuses."""
    return text.isascii() and text.isdigit()


def _status_ranges(text: str) -> tuple[tuple[int, int], ...]:
    ranges: list[tuple[int, int]] = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item == "5xx":
            ranges.append((500, 599))
        elif item == "gateway-error":
            ranges.append((502, 504))
        else:
            low_text, sep, high_text = item.partition("-")
            if not _ascii_digits(low_text) or (sep and not _ascii_digits(high_text)):
                raise ValueError(f"not a status or range: {item!r}")
            low, high = int(low_text), int(high_text) if sep else int(low_text)
            if not 100 <= low <= high <= 599:
                raise ValueError(f"invalid status range {item!r}")
            ranges.append((low, high))
    return tuple(ranges)


def _grpc_codes(text: str) -> frozenset[int]:
    codes: set[int] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name = item.upper().replace("-", "_")
        if name not in GrpcStatus.__members__:
            raise ValueError(f"unknown gRPC status {item!r}")
        codes.add(int(GrpcStatus[name]))
    return frozenset(codes)


@dataclass(slots=True)
class OutboundDirectives:
    """What the app asked of the outbound proxy through ``l5d-*`` request headers."""

    require_identity: str | None = None
    dst_override: str | None = None
    retry_http: tuple[tuple[int, int], ...] | None = None
    retry_grpc: frozenset[int] | None = None
    retry_limit: int | None = None
    retry_timeout: float | None = None
    request_timeout: float | None = None
    response_timeout: float | None = None
    errors: list[str] = field(default_factory=list)


def _text(value: bytes) -> str:
    return value.decode("latin-1").strip()


def _apply_override(directives: OutboundDirectives, name: bytes, value: str) -> None:
    if name == RETRY_HTTP:
        directives.retry_http = _status_ranges(value)
    elif name == RETRY_GRPC:
        directives.retry_grpc = _grpc_codes(value)
    elif name == RETRY_LIMIT:
        if not _ascii_digits(value):
            raise ValueError(f"not a retry count: {value!r}")
        directives.retry_limit = int(value)
    elif name == RETRY_TIMEOUT:
        directives.retry_timeout = parse_duration(value)
    elif name in (TIMEOUT, REQUEST_TIMEOUT):
        directives.request_timeout = parse_duration(value)
    elif name == RESPONSE_TIMEOUT:
        directives.response_timeout = parse_duration(value)


def outbound_request_headers(
    headers: Sequence[tuple[bytes, bytes]], *, allow_overrides: bool, ingress_mode: bool = False
) -> tuple[Headers, OutboundDirectives]:
    """Split an app's request headers into what to forward and what the proxy must do."""
    directives = OutboundDirectives()
    forwarded: Headers = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in _OVERRIDES:
            if allow_overrides:
                try:
                    _apply_override(directives, lowered, _text(value))
                except ValueError as exc:
                    directives.errors.append(f"ignored {lowered.decode()}: {exc}")
            continue
        if lowered == REQUIRE_ID:
            directives.require_identity = _text(value) or None
            continue
        if lowered == DST_OVERRIDE:
            if ingress_mode:
                directives.dst_override = _text(value) or None
            continue
        forwarded.append((name, value))
    if directives.dst_override is not None:
        forwarded = [(n, v) for n, v in forwarded if n.lower() != DST_CANONICAL]
    return forwarded, directives


def required_identity_error(required: str, server_identity: str | None) -> str | None:
    """Why a request with ``l5d-require-id: required`` must not go to this server, or ``None``.

    The connection must be mesh mTLS and the server's verified identity exactly ``required``
    (linkerd-wire.md §9 outbound step 9; a mismatch is answered 502).
    """
    if server_identity is None:
        return f"l5d-require-id {required!r}: the endpoint is not meshed (no mTLS)"
    if server_identity != required:
        return f"l5d-require-id {required!r}: the endpoint's identity is {server_identity!r}"
    return None


def inbound_request_headers(
    headers: Sequence[tuple[bytes, bytes]], client_identity: str | None
) -> Headers:
    """Headers for the app: the wire's ``l5d-client-id`` replaced by the verified identity."""
    forwarded = [(n, v) for n, v in headers if n.lower() != CLIENT_ID]
    if client_identity:
        forwarded.append((CLIENT_ID, client_identity.encode("ascii", "replace")))
    return forwarded


@dataclass(frozen=True, slots=True)
class OrigProto:
    """The HTTP/1 version a request had before a client proxy upgraded it to HTTP/2."""

    version: str  # "HTTP/1.1" or "HTTP/1.0"
    absolute_form: bool = False


def encode_orig_proto(orig: OrigProto) -> tuple[bytes, bytes]:
    value = orig.version + ("; absolute-form" if orig.absolute_form else "")
    return (ORIG_PROTO, value.encode("ascii"))


def decode_orig_proto(
    headers: Sequence[tuple[bytes, bytes]],
) -> tuple[OrigProto | None, Headers]:
    """Find and remove ``l5d-orig-proto``; an unknown version leaves the request as HTTP/2."""
    found: OrigProto | None = None
    rest: Headers = []
    for name, value in headers:
        if name.lower() != ORIG_PROTO:
            rest.append((name, value))
            continue
        found = parse_orig_proto(value)
    return found, rest


def parse_orig_proto(value: bytes) -> OrigProto | None:
    """The HTTP/1 version an ``l5d-orig-proto`` value names, or ``None`` if unknown."""
    parts = [p.strip() for p in _text(value).split(";")]
    if parts[0] not in ("HTTP/1.1", "HTTP/1.0"):
        return None
    return OrigProto(parts[0], absolute_form="absolute-form" in parts[1:])


def proxy_error_headers(message: str, *, close: bool = False) -> Headers:
    """Headers for a response the proxy synthesized (``l5d-proxy-error`` etc.)."""
    safe = "".join(c if 0x20 <= ord(c) < 0x7F else " " for c in message)
    headers: Headers = [(PROXY_ERROR, safe.encode("ascii"))]
    if close:
        headers.append((PROXY_CONNECTION, b"close"))
    return headers
