"""Trace context in request headers: W3C Trace Context and B3, parsed and rewritten (sans-io).

:func:`extract` reads the caller's context from a request's header list. Formats are tried in
the order Linkerd and OpenTelemetry's composite propagators use: W3C ``traceparent`` (with
``tracestate``), then B3 single-header ``b3``, then B3 multi-header ``x-b3-*``. A header that
does not parse is ignored as if absent, so hostile values (wrong lengths, non-hex or
upper-case hex, all-zero ids, version ``ff``, duplicates, oversized or malformed
``tracestate``) never produce a context and never raise.

:func:`propagation_headers` gives the headers to set once the proxy has made its own span:
every format present that carries the same trace id then names the proxy's span as the
parent, so the next hop's span becomes the proxy's child; :func:`inject` applies them to a
header list. Other headers are forwarded untouched and in order; ``tracestate`` is passed on
as received (the proxy adds no entry of its own).

Only sampled contexts are acted on by the caller (:mod:`.tracer`); the parser reports the
sampling decision and leaves policy to it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_TRACESTATE_CHARS",
    "Format",
    "TraceContext",
    "extract",
    "inject",
    "parse_b3_multi",
    "parse_b3_single",
    "parse_traceparent",
    "parse_tracestate",
    "propagation_headers",
]

Header = tuple[bytes, bytes]

#: The W3C spec asks vendors to propagate at least 512 characters of ``tracestate``; longer
#: values are not recorded on spans (they are still forwarded as received).
MAX_TRACESTATE_CHARS = 512
#: Most list members the W3C spec allows in ``tracestate``.
MAX_TRACESTATE_MEMBERS = 32
#: A ``traceparent`` of a future version may be longer than 55 characters; this bounds it.
MAX_TRACEPARENT_CHARS = 256
#: Bounds every B3 header value (a full single ``b3`` value is 32+1+16+1+1+1+16 = 68).
MAX_B3_CHARS = 128

_HEX = frozenset("0123456789abcdef")
_TRACEPARENT = b"traceparent"
_TRACESTATE = b"tracestate"
_B3 = b"b3"
_B3_TRACE_ID = b"x-b3-traceid"
_B3_SPAN_ID = b"x-b3-spanid"
_B3_PARENT_SPAN_ID = b"x-b3-parentspanid"
_B3_SAMPLED = b"x-b3-sampled"
_B3_FLAGS = b"x-b3-flags"
_INTERESTING = frozenset(
    (
        _TRACEPARENT,
        _TRACESTATE,
        _B3,
        _B3_TRACE_ID,
        _B3_SPAN_ID,
        _B3_PARENT_SPAN_ID,
        _B3_SAMPLED,
        _B3_FLAGS,
    )
)
#: Header names of the formats, as they appear lower-cased.
_FIRST_BYTES = frozenset(name[0] for name in _INTERESTING) | frozenset(
    name[:1].upper()[0] for name in _INTERESTING
)


class Format(enum.Enum):
    W3C = "w3c"
    B3_SINGLE = "b3"
    B3_MULTI = "x-b3"


@dataclass(frozen=True, slots=True)
class TraceContext:
    """The caller's span, as one header format carried it."""

    format: Format
    #: 16 bytes (a 64-bit B3 trace id is zero-padded on the left, as OpenTelemetry does).
    trace_id: bytes
    #: The caller's span id (8 bytes): the parent of the proxy's span.
    parent_id: bytes
    sampled: bool
    #: W3C trace flags (B3: ``0x01`` when sampled).
    flags: int = 0
    #: The received ``tracestate`` when it is valid, else ``""``.
    trace_state: str = ""
    #: Every format present that carries this trace id; :func:`inject` rewrites them all.
    formats: frozenset[Format] = frozenset()
    #: B3 single: the trace id as sent (16 or 32 hex digits) and the sampling field.
    b3_trace_text: str = ""
    b3_sampling: str = ""


def _ascii(value: bytes, limit: int) -> str | None:
    if len(value) > limit:
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None


def _hex_id(text: str, size: int) -> bytes | None:
    """``size`` bytes from exactly ``2 * size`` lower-case hex digits, not all zero."""
    if len(text) != 2 * size or not _HEX.issuperset(text):
        return None
    raw = bytes.fromhex(text)
    return None if raw == bytes(size) else raw


def _b3_trace_id(text: str) -> bytes | None:
    """A B3 trace id: 16 or 32 hex digits; the 64-bit form is padded to 128 bits."""
    if len(text) == 16:
        short = _hex_id(text, 8)
        return None if short is None else bytes(8) + short
    return _hex_id(text, 16)


def parse_traceparent(value: str) -> tuple[bytes, bytes, int] | None:
    """``(trace_id, parent_id, flags)`` from a ``traceparent`` value, or ``None``.

    Version ``00`` must be exactly 55 characters. A higher version (``ff`` is invalid) may
    be longer, with a ``-`` after the flags; its first four fields are read as version 00.
    """
    if len(value) < 55 or len(value) > MAX_TRACEPARENT_CHARS:
        return None
    version = value[:2]
    if not _HEX.issuperset(version) or version == "ff" or len(version) != 2:
        return None
    if version == "00" and len(value) != 55:
        return None
    if len(value) > 55 and value[55] != "-":
        return None
    if value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    trace_id = _hex_id(value[3:35], 16)
    parent_id = _hex_id(value[36:52], 8)
    flags_text = value[53:55]
    if trace_id is None or parent_id is None or not _HEX.issuperset(flags_text):
        return None
    return trace_id, parent_id, int(flags_text, 16)


def _valid_tracestate_key(key: str) -> bool:
    if not key or len(key) > 256:
        return False
    tenant, at, system = key.partition("@")
    allowed = _HEX | frozenset("ghijklmnopqrstuvwxyz_-*/")
    if at:
        return (
            0 < len(tenant) <= 241
            and 0 < len(system) <= 14
            and allowed.issuperset(tenant)
            and allowed.issuperset(system)
            and (tenant[0].isdigit() or tenant[0].islower())
            and system[0].islower()
        )
    return key[0].islower() and allowed.issuperset(key)


def _valid_tracestate_value(value: str) -> bool:
    if not value or len(value) > 256 or value.endswith(" "):
        return False
    return all(0x20 <= ord(c) <= 0x7E and c not in ",=" for c in value)


def parse_tracestate(values: Sequence[str]) -> str:
    """The combined ``tracestate`` when it is valid and within bounds, else ``""``.

    Several header lines are one list joined with commas; empty members are allowed and
    dropped. More than 32 members, a repeated key, a bad key or value, or more than
    :data:`MAX_TRACESTATE_CHARS` characters make the whole value ignored.
    """
    combined = ",".join(values)
    if len(combined) > MAX_TRACESTATE_CHARS:
        return ""
    members = []
    keys = set()
    for raw in combined.split(","):
        member = raw.strip(" \t")
        if not member:
            continue
        key, eq, value = member.partition("=")
        if not eq or not _valid_tracestate_key(key) or not _valid_tracestate_value(value):
            return ""
        if key in keys:
            return ""
        keys.add(key)
        members.append(member)
    if len(members) > MAX_TRACESTATE_MEMBERS:
        return ""
    return ",".join(members)


def parse_b3_single(value: str) -> tuple[str, bytes, bytes, str] | None:
    """``(trace_id_text, trace_id, span_id, sampling)`` from a ``b3`` value, or ``None``.

    ``{trace}-{span}[-{sampling}[-{parent}]]``; sampling is ``0``, ``1`` or ``d`` (debug).
    A bare sampling decision (``b3: 1``) carries no ids to be a child of, so it is ``None``.
    """
    if len(value) > MAX_B3_CHARS:
        return None
    parts = value.split("-")
    if not 2 <= len(parts) <= 4:
        return None
    trace_id = _b3_trace_id(parts[0])
    span_id = _hex_id(parts[1], 8)
    sampling = parts[2] if len(parts) > 2 else ""
    if trace_id is None or span_id is None:
        return None
    if len(parts) > 2 and sampling not in ("0", "1", "d"):
        return None
    if len(parts) == 4 and _hex_id(parts[3], 8) is None:
        return None
    return parts[0], trace_id, span_id, sampling


def parse_b3_multi(
    trace_id_text: str, span_id_text: str, sampled_text: str | None, flags_text: str | None
) -> tuple[bytes, bytes, bool] | None:
    """``(trace_id, span_id, sampled)`` from ``x-b3-*`` values, or ``None``.

    Sampled is ``x-b3-sampled: 1`` (or the legacy ``true``) or ``x-b3-flags: 1`` (debug).
    """
    trace_id = _b3_trace_id(trace_id_text)
    span_id = _hex_id(span_id_text, 8)
    if trace_id is None or span_id is None:
        return None
    if sampled_text is not None and sampled_text not in ("0", "1", "true", "false"):
        return None
    sampled = sampled_text in ("1", "true") or flags_text == "1"
    return trace_id, span_id, sampled


def _collect(headers: Iterable[Header]) -> dict[bytes, list[bytes]]:
    """The values of the trace headers, by lower-cased name."""
    found: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        if not name or name[0] not in _FIRST_BYTES:
            continue
        lower = name.lower()
        if lower in _INTERESTING:
            found.setdefault(lower, []).append(value)
    return found


def _single(found: dict[bytes, list[bytes]], name: bytes, limit: int) -> str | None:
    """The one value of ``name`` (``None`` when absent, repeated, too long or not ASCII)."""
    values = found.get(name)
    if values is None or len(values) != 1:
        return None
    text = _ascii(values[0], limit)
    return None if text is None else text.strip(" \t")


def _w3c(found: dict[bytes, list[bytes]]) -> TraceContext | None:
    text = _single(found, _TRACEPARENT, MAX_TRACEPARENT_CHARS)
    parsed = parse_traceparent(text) if text is not None else None
    if parsed is None:
        return None
    trace_id, parent_id, flags = parsed
    states: list[str] = []
    for raw in found.get(_TRACESTATE, ()):
        state = _ascii(raw, MAX_TRACESTATE_CHARS)
        if state is None:
            states = []
            break
        states.append(state)
    return TraceContext(
        Format.W3C,
        trace_id,
        parent_id,
        sampled=bool(flags & 0x01),
        flags=flags,
        trace_state=parse_tracestate(states) if states else "",
    )


def _b3_single(found: dict[bytes, list[bytes]]) -> TraceContext | None:
    text = _single(found, _B3, MAX_B3_CHARS)
    parsed = parse_b3_single(text) if text is not None else None
    if parsed is None:
        return None
    trace_text, trace_id, span_id, sampling = parsed
    sampled = sampling in ("1", "d")
    return TraceContext(
        Format.B3_SINGLE,
        trace_id,
        span_id,
        sampled=sampled,
        flags=0x01 if sampled else 0,
        b3_trace_text=trace_text,
        b3_sampling=sampling,
    )


def _b3_multi(found: dict[bytes, list[bytes]]) -> TraceContext | None:
    trace_text = _single(found, _B3_TRACE_ID, MAX_B3_CHARS)
    span_text = _single(found, _B3_SPAN_ID, MAX_B3_CHARS)
    if trace_text is None or span_text is None:
        return None
    sampled_text = _single(found, _B3_SAMPLED, MAX_B3_CHARS)
    if sampled_text is None and _B3_SAMPLED in found:
        return None  # repeated or not ASCII
    parsed = parse_b3_multi(
        trace_text, span_text, sampled_text, _single(found, _B3_FLAGS, MAX_B3_CHARS)
    )
    if parsed is None:
        return None
    trace_id, span_id, sampled = parsed
    return TraceContext(
        Format.B3_MULTI, trace_id, span_id, sampled=sampled, flags=0x01 if sampled else 0
    )


def extract(headers: Iterable[Header]) -> TraceContext | None:
    """The caller's trace context from a request's headers (``None``: none that parses)."""
    found = _collect(headers)
    if not found:
        return None
    contexts = [c for c in (_w3c(found), _b3_single(found), _b3_multi(found)) if c is not None]
    if not contexts:
        return None
    chosen = contexts[0]
    formats = frozenset(
        c.format
        for c in contexts
        if c.trace_id == chosen.trace_id and c.parent_id == chosen.parent_id
    )
    return TraceContext(
        chosen.format,
        chosen.trace_id,
        chosen.parent_id,
        sampled=chosen.sampled,
        flags=chosen.flags,
        trace_state=chosen.trace_state,
        formats=formats,
        b3_trace_text=next((c.b3_trace_text for c in contexts if c.b3_trace_text), ""),
        b3_sampling=next((c.b3_sampling for c in contexts if c.format is Format.B3_SINGLE), ""),
    )


def _traceparent(ctx: TraceContext, span_id: bytes) -> bytes:
    # Version 00 is written even when a later version came in, as the spec asks of a
    # participant that changes the header.
    return f"00-{ctx.trace_id.hex()}-{span_id.hex()}-{ctx.flags & 0xFF:02x}".encode()


def _b3_single_value(ctx: TraceContext, span_id: bytes) -> bytes:
    parts = [ctx.b3_trace_text or ctx.trace_id.hex(), span_id.hex()]
    if ctx.b3_sampling:
        parts.append(ctx.b3_sampling)
        parts.append(ctx.parent_id.hex())
    return "-".join(parts).encode()


def propagation_headers(ctx: TraceContext, span_id: bytes) -> list[Header]:
    """The headers to *set* so the next hop's span is a child of ``span_id``.

    One per format in ``ctx.formats``: ``traceparent``, ``b3``, or ``x-b3-spanid`` with
    ``x-b3-parentspanid`` (the caller's span, as a B3 child span carries it). Each replaces
    every received header of its name; ``tracestate`` and the B3 trace id and sampling
    headers are forwarded as received.
    """
    formats = ctx.formats or frozenset((ctx.format,))
    out: list[Header] = []
    if Format.W3C in formats:
        out.append((_TRACEPARENT, _traceparent(ctx, span_id)))
    if Format.B3_SINGLE in formats:
        out.append((_B3, _b3_single_value(ctx, span_id)))
    if Format.B3_MULTI in formats:
        out.append((_B3_SPAN_ID, span_id.hex().encode()))
        out.append((_B3_PARENT_SPAN_ID, ctx.parent_id.hex().encode()))
    return out


def inject(headers: Sequence[Header], ctx: TraceContext, span_id: bytes) -> list[Header]:
    """``headers`` as the proxy forwards them: :func:`propagation_headers` set (received
    headers of those names, in any case, left out; the new ones appended), the rest
    untouched and in order. The observer seam applies the same rule
    (:meth:`~gossamer_proxy.observe.ObservedRequest.set_request_header`)."""
    updates = propagation_headers(ctx, span_id)
    names = {name for name, _ in updates}
    kept = [(n, v) for n, v in headers if not (n and n[0] in _FIRST_BYTES and n.lower() in names)]
    return [*kept, *updates]
