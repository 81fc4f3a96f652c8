"""The proxy's spans: one per sampled request and direction, built without I/O.

:func:`start_span` is called when a request head arrives with a sampled context; it picks
the span's id and records the request's attributes. :func:`finish_span` adds the response
and the end time. Attribute names follow linkerd2-proxy's (OpenTelemetry's HTTP semantic
conventions): ``http.request.method``, ``url.scheme``, ``url.path``, ``url.query``,
``server.address``, ``server.port`` and ``http.response.status_code``. The span is named
after the request path, as Linkerd names it; inbound spans are ``SERVER`` spans and outbound
spans ``CLIENT`` spans, and both have the caller's span as their (remote) parent.

Times are wall-clock nanoseconds passed in by the caller.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from .propagation import TraceContext

__all__ = [
    "MAX_ATTRIBUTE_CHARS",
    "ActiveSpan",
    "FinishedSpan",
    "SpanKind",
    "finish_span",
    "new_span_id",
    "start_span",
]

#: Attribute values (path, query, host) are cut to this many characters.
MAX_ATTRIBUTE_CHARS = 1024

AttributeValue = str | int


class SpanKind(enum.IntEnum):
    """OTLP ``Span.SpanKind`` values."""

    SERVER = 2
    CLIENT = 3


@dataclass(slots=True)
class ActiveSpan:
    """A span whose request is in flight."""

    context: TraceContext
    span_id: bytes
    kind: SpanKind
    name: str
    start_unix_nano: int
    attributes: list[tuple[str, AttributeValue]]


@dataclass(frozen=True, slots=True)
class FinishedSpan:
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    name: str
    kind: SpanKind
    start_unix_nano: int
    end_unix_nano: int
    attributes: tuple[tuple[str, AttributeValue], ...]
    trace_state: str = ""
    #: W3C trace flags of the context (bit 0: sampled).
    trace_flags: int = 1
    #: The request failed without a response, or with a 5xx status.
    error: bool = False
    #: Why it failed (the proxy's error kind), when it did.
    error_message: str = ""


def new_span_id(random_bytes: Callable[[int], bytes]) -> bytes:
    """Eight random bytes that are not all zero (an all-zero id is invalid)."""
    while True:
        span_id = random_bytes(8)
        if span_id != bytes(8):
            return span_id


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ATTRIBUTE_CHARS else text[:MAX_ATTRIBUTE_CHARS]


def _split_authority(authority: str) -> tuple[str, int | None]:
    host, sep, port = authority.rpartition(":")
    if sep and port.isdigit() and (not host.startswith("[") or host.endswith("]")):
        return host.strip("[]"), int(port)
    return authority.strip("[]"), None


def start_span(
    context: TraceContext,
    *,
    kind: SpanKind,
    method: str,
    target: str,
    authority: str,
    scheme: str,
    now_unix_nano: int,
    random_bytes: Callable[[int], bytes],
) -> ActiveSpan:
    """A new span, the child of ``context``'s parent, for a request about to be forwarded.

    ``target`` is the request target (origin form ``/p?q`` or absolute form), ``authority``
    the ``:authority`` or ``Host`` (may be empty).
    """
    path_and_query = target
    if "://" in target:
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        path_and_query = rest[slash:] if slash >= 0 else "/"
    path, q, query = path_and_query.partition("?")
    attributes: list[tuple[str, AttributeValue]] = [
        ("http.request.method", _cut(method)),
        ("url.path", _cut(path)),
    ]
    if scheme:
        attributes.append(("url.scheme", scheme))
    if q:
        attributes.append(("url.query", _cut(query)))
    if authority:
        host, port = _split_authority(authority)
        attributes.append(("server.address", _cut(host)))
        if port is not None:
            attributes.append(("server.port", port))
    return ActiveSpan(
        context=context,
        span_id=new_span_id(random_bytes),
        kind=kind,
        name=_cut(path) or "/",
        start_unix_nano=now_unix_nano,
        attributes=attributes,
    )


def finish_span(
    span: ActiveSpan,
    *,
    status: int | None,
    now_unix_nano: int,
    error: str = "",
    grpc_status: int | None = None,
) -> FinishedSpan:
    """The finished span; ``status`` is ``None`` when no response head came back.

    It is an error span when the proxy ended the request itself (``error``), no response
    came, the status is 5xx, or a gRPC response ended with a non-zero ``grpc-status``.
    """
    attributes = list(span.attributes)
    if status is not None:
        attributes.append(("http.response.status_code", status))
    if grpc_status is not None:
        attributes.append(("rpc.grpc.status_code", grpc_status))
    if error:
        attributes.append(("error.type", error))
    failed = status is None or status >= 500 or bool(error) or bool(grpc_status)
    return FinishedSpan(
        trace_id=span.context.trace_id,
        span_id=span.span_id,
        parent_span_id=span.context.parent_id,
        name=span.name,
        kind=span.kind,
        start_unix_nano=span.start_unix_nano,
        end_unix_nano=max(now_unix_nano, span.start_unix_nano),
        attributes=tuple(attributes),
        trace_state=span.context.trace_state,
        trace_flags=span.context.flags & 0xFF,
        error=failed,
        error_message=error,
    )
