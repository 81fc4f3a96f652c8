"""Trace-context parsing and rewriting: W3C traceparent/tracestate, B3 single and multi."""

from __future__ import annotations

import pytest
from gossamer_proxy.tracing.propagation import (
    MAX_TRACESTATE_CHARS,
    Format,
    extract,
    inject,
    parse_traceparent,
    parse_tracestate,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
OURS = bytes.fromhex("1122334455667788")
VALID = f"00-{TRACE}-{PARENT}-01"


def h(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in pairs]


def test_a_sampled_traceparent_is_read() -> None:
    ctx = extract(h(("host", "x"), ("traceparent", VALID)))
    assert ctx is not None
    assert ctx.format is Format.W3C
    assert ctx.trace_id.hex() == TRACE
    assert ctx.parent_id.hex() == PARENT
    assert ctx.sampled
    assert ctx.flags == 1


def test_an_unsampled_traceparent_is_read_as_unsampled() -> None:
    ctx = extract(h(("traceparent", f"00-{TRACE}-{PARENT}-00")))
    assert ctx is not None
    assert not ctx.sampled


def test_header_names_are_case_insensitive() -> None:
    ctx = extract(h(("TraceParent", VALID)))
    assert ctx is not None
    assert ctx.sampled


def test_no_trace_headers_no_context() -> None:
    assert extract(h(("host", "x"), ("accept", "*/*"))) is None
    assert extract([]) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00",
        f"00-{TRACE}-{PARENT}-1",  # short flags
        f"00-{TRACE}-{PARENT}-011",  # version 00 must be exactly 55 characters
        f"00-{TRACE[:-1]}-{PARENT}0-01",  # misplaced dash
        f"00-{TRACE}-{PARENT}",  # no flags
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE}-{PARENT}-01",  # version ff is invalid
        f"0g-{TRACE}-{PARENT}-01",  # non-hex version
        f"00-{TRACE.upper()}-{PARENT}-01",  # upper-case hex
        f"00-{TRACE[:-1]}z-{PARENT}-01",  # non-hex trace id
        f"00-{TRACE}-{PARENT[:-1]}x-01",  # non-hex parent id
        f"00-{TRACE}-{PARENT}-0x",  # non-hex flags
        f"01-{TRACE}-{PARENT}-01x",  # a later version must have a dash after the flags
        "00-" + "a" * 10_000,  # oversized
    ],
)
def test_malformed_traceparent_is_ignored(value: str) -> None:
    assert parse_traceparent(value) is None
    assert extract(h(("traceparent", value))) is None


def test_a_later_version_is_read_by_its_first_fields() -> None:
    assert parse_traceparent(f"cc-{TRACE}-{PARENT}-01-what-the-future-holds") == (
        bytes.fromhex(TRACE),
        bytes.fromhex(PARENT),
        1,
    )


def test_repeated_traceparent_and_non_ascii_are_ignored() -> None:
    assert extract(h(("traceparent", VALID), ("traceparent", VALID))) is None
    assert extract([(b"traceparent", VALID.encode() + b"\xff")]) is None


def test_tracestate_is_kept_when_valid_and_dropped_when_not() -> None:
    ctx = extract(
        h(
            ("traceparent", VALID),
            ("tracestate", "rojo=00f067aa0ba902b7"),
            ("tracestate", "congo=t61rcWkgMzE, tenant@vendor=x"),
        )
    )
    assert ctx is not None
    assert ctx.trace_state == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,tenant@vendor=x"
    for bad in (
        "a" * (MAX_TRACESTATE_CHARS + 1) + "=1",  # oversized
        ",".join(f"k{i}=v" for i in range(33)),  # more than 32 members
        "Upper=1",  # bad key
        "k=v,k=w",  # repeated key
        "k=has,comma=x=y",  # '=' inside a value
        "k=\x01",  # control character
    ):
        assert parse_tracestate([bad]) == "", bad
        ctx = extract(h(("traceparent", VALID), ("tracestate", bad)))
        assert ctx is not None
        assert ctx.sampled
        assert ctx.trace_state == ""


def test_inject_makes_the_proxy_span_the_parent_and_keeps_the_rest() -> None:
    headers = h(("Host", "web"), ("TraceParent", VALID), ("tracestate", "rojo=1"), ("x", "y"))
    ctx = extract(headers)
    assert ctx is not None
    out = inject(headers, ctx, OURS)
    assert out == h(
        ("Host", "web"),
        ("tracestate", "rojo=1"),
        ("x", "y"),
        ("traceparent", f"00-{TRACE}-{OURS.hex()}-01"),  # set: the received one is replaced
    )


def test_inject_writes_version_00_for_a_later_version() -> None:
    headers = h(("traceparent", f"cc-{TRACE}-{PARENT}-01-extra"))
    ctx = extract(headers)
    assert ctx is not None
    assert inject(headers, ctx, OURS) == h(("traceparent", f"00-{TRACE}-{OURS.hex()}-01"))


def test_b3_multi_header_is_read_and_rewritten_as_a_child() -> None:
    headers = h(("x-b3-traceid", TRACE), ("X-B3-SpanId", PARENT), ("x-b3-sampled", "1"))
    ctx = extract(headers)
    assert ctx is not None
    assert ctx.format is Format.B3_MULTI
    assert ctx.sampled
    assert inject(headers, ctx, OURS) == h(
        ("x-b3-traceid", TRACE),
        ("x-b3-sampled", "1"),
        ("x-b3-spanid", OURS.hex()),
        ("x-b3-parentspanid", PARENT),
    )


def test_b3_sampling_decisions() -> None:
    def sampled(*extra: tuple[str, str]) -> bool | None:
        ctx = extract(h(("x-b3-traceid", TRACE), ("x-b3-spanid", PARENT), *extra))
        return None if ctx is None else ctx.sampled

    assert sampled(("x-b3-sampled", "1")) is True
    assert sampled(("x-b3-sampled", "true")) is True
    assert sampled(("x-b3-flags", "1")) is True  # debug implies sampled
    assert sampled(("x-b3-sampled", "0")) is False
    assert sampled() is False  # deferred: Linkerd does not trace it
    assert sampled(("x-b3-sampled", "yes")) is None
    assert sampled(("x-b3-sampled", "1"), ("x-b3-sampled", "1")) is None


def test_a_64_bit_b3_trace_id_is_padded_and_kept_on_the_wire() -> None:
    headers = h(("b3", f"{PARENT}-{PARENT}-1"))
    ctx = extract(headers)
    assert ctx is not None
    assert ctx.trace_id == bytes(8) + bytes.fromhex(PARENT)
    assert inject(headers, ctx, OURS) == h(("b3", f"{PARENT}-{OURS.hex()}-1-{PARENT}"))


@pytest.mark.parametrize(
    "value",
    [
        "1",  # a decision without ids
        "0",
        f"{TRACE}-{PARENT}-2",  # bad sampling
        f"{TRACE}-{PARENT}-1-{'0' * 16}",  # all-zero parent
        f"{TRACE}-{'0' * 16}-1",  # all-zero span
        f"{'0' * 32}-{PARENT}-1",  # all-zero trace
        f"{TRACE[:30]}-{PARENT}-1",  # 30 hex digits
        f"{TRACE}-{PARENT}-1-{PARENT}-x",  # too many fields
        f"{TRACE.upper()}-{PARENT}-1",
        "-" * 200,
    ],
)
def test_malformed_single_b3_is_ignored(value: str) -> None:
    assert extract(h(("b3", value))) is None


def test_single_b3_sampling_and_debug() -> None:
    for sampling, expect in (("1", True), ("d", True), ("0", False), (None, False)):
        value = f"{TRACE}-{PARENT}" + (f"-{sampling}" if sampling else "")
        ctx = extract(h(("b3", value)))
        assert ctx is not None
        assert ctx.sampled is expect


def test_w3c_wins_and_every_format_of_the_same_trace_is_rewritten() -> None:
    headers = h(
        ("traceparent", VALID),
        ("b3", f"{TRACE}-{PARENT}-1"),
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", PARENT),
        ("x-b3-sampled", "1"),
    )
    ctx = extract(headers)
    assert ctx is not None
    assert ctx.format is Format.W3C
    assert ctx.formats == {Format.W3C, Format.B3_SINGLE, Format.B3_MULTI}
    out = dict(inject(headers, ctx, OURS))
    assert out[b"traceparent"] == f"00-{TRACE}-{OURS.hex()}-01".encode()
    assert out[b"b3"] == f"{TRACE}-{OURS.hex()}-1-{PARENT}".encode()
    assert out[b"x-b3-spanid"] == OURS.hex().encode()
    assert out[b"x-b3-parentspanid"] == PARENT.encode()


def test_a_b3_context_of_another_trace_is_left_alone() -> None:
    other = "a" * 32
    headers = h(("traceparent", VALID), ("b3", f"{other}-{PARENT}-1"))
    ctx = extract(headers)
    assert ctx is not None
    assert ctx.formats == {Format.W3C}
    assert dict(inject(headers, ctx, OURS))[b"b3"] == f"{other}-{PARENT}-1".encode()


def test_a_bad_traceparent_falls_back_to_b3() -> None:
    ctx = extract(h(("traceparent", "garbage"), ("b3", f"{TRACE}-{PARENT}-1")))
    assert ctx is not None
    assert ctx.format is Format.B3_SINGLE
    assert ctx.sampled
