"""Trace-context headers: :func:`gossamer_proxy.tracing.propagation.extract` and ``inject``.

The input becomes a header list drawn mostly from the trace header names (any case) with
arbitrary values. Contract checked: nothing raises; a context has a 16-byte trace id and an
8-byte parent id, neither all zero; ``inject`` keeps every header that is not a trace header
byte for byte and in order; and the injected headers parse back to the same trace with the
proxy's span as the parent.
"""

from __future__ import annotations

from gossamer_proxy.tracing.propagation import Format, extract, inject

from ..harness import Finding, Target
from ..ops import Choices

NAMES = (
    b"traceparent",
    b"TraceParent",
    b"tracestate",
    b"b3",
    b"B3",
    b"x-b3-traceid",
    b"x-b3-spanid",
    b"X-B3-SpanId",
    b"x-b3-parentspanid",
    b"x-b3-sampled",
    b"x-b3-flags",
    b"host",
    b"t",
)
TRACE_NAMES = frozenset(n.lower() for n in NAMES[:11])
SPAN = bytes.fromhex("0123456789abcdef")


def one_input(data: bytes) -> None:
    choices = Choices(data)
    headers = []
    for _ in range(choices.below(12)):
        name = NAMES[choices.below(len(NAMES))] if choices.u8() < 240 else choices.blob(16)
        headers.append((name, choices.blob(600)))
    ctx = extract(headers)
    if ctx is None:
        return
    if len(ctx.trace_id) != 16 or ctx.trace_id == bytes(16):
        raise Finding(f"bad trace id {ctx.trace_id.hex()} from {headers!r}", key="bad trace id")
    if len(ctx.parent_id) != 8 or ctx.parent_id == bytes(8):
        raise Finding(f"bad parent id {ctx.parent_id.hex()}", key="bad parent id")
    out = inject(headers, ctx, SPAN)
    kept = [h for h in headers if h[0].lower() not in TRACE_NAMES]
    if [h for h in out if h[0].lower() not in TRACE_NAMES] != kept:
        raise Finding("inject changed a header that is not a trace header", key="inject changed")
    again = extract(out)
    if again is None or again.trace_id != ctx.trace_id or again.sampled != ctx.sampled:
        raise Finding(f"injected headers {out!r} do not parse back", key="no round trip")
    if again.format is ctx.format and again.parent_id != SPAN:
        raise Finding(f"injected parent is {again.parent_id.hex()}", key="wrong parent")
    if ctx.format is Format.W3C and again.trace_state != ctx.trace_state:
        raise Finding("tracestate changed", key="tracestate changed")


def _seed(*pairs: tuple[int, bytes]) -> bytes:
    out = bytearray()
    out.append(len(pairs))
    for index, value in pairs:
        # "use a known name" (< 240; read first), its index, the value with a two-byte length
        out += bytes([0, index]) + len(value).to_bytes(2, "big") + value
    return bytes(out)


def seeds() -> list[bytes]:
    tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    return [
        _seed((0, tp)),
        _seed((0, tp), (2, b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")),
        _seed((11, b"example"), (1, tp)),
        _seed((3, b"4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1-05e3ac9a4f6e3b90")),
        _seed((5, b"4bf92f3577b34da6"), (6, b"00f067aa0ba902b7"), (9, b"1")),
    ]


TARGET = Target(
    name="trace_context",
    one_input=one_input,
    seeds=seeds,
    max_len=4096,
    dictionary=(b"00-", b"-01", b"-00", b"ff-", b"-d", b"0000000000000000", b"=", b","),
)
