"""Span building, the bounded batching queue, the resource and the OTLP message (sans-io)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gossamer_api.proxy import otlp_trace_pb2
from gossamer_proxy.tracing.batching import BatchConfig, SpanQueue
from gossamer_proxy.tracing.otlp import export_request
from gossamer_proxy.tracing.propagation import extract
from gossamer_proxy.tracing.resource import resource_attributes
from gossamer_proxy.tracing.spans import (
    MAX_ATTRIBUTE_CHARS,
    FinishedSpan,
    SpanKind,
    finish_span,
    new_span_id,
    start_span,
)
from gossamer_proxy.tracing.tracer import Tracer

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def _context(tracestate: str = "") -> object:
    headers = [(b"traceparent", f"00-{TRACE}-{PARENT}-01".encode())]
    if tracestate:
        headers.append((b"tracestate", tracestate.encode()))
    ctx = extract(headers)
    assert ctx is not None
    return ctx


def test_a_span_is_the_child_of_the_incoming_context_with_linkerds_attributes() -> None:
    ctx = _context("rojo=1")
    active = start_span(
        ctx,  # type: ignore[arg-type]
        kind=SpanKind.SERVER,
        method="GET",
        target="/books/1?x=2",
        authority="web.demo.svc.cluster.local:8080",
        scheme="http",
        now_unix_nano=1_000,
        random_bytes=lambda n: b"\x07" * n,
    )
    done = finish_span(active, status=200, now_unix_nano=5_000)
    assert done.trace_id.hex() == TRACE
    assert done.parent_span_id.hex() == PARENT
    assert done.span_id == b"\x07" * 8
    assert done.name == "/books/1"
    assert done.kind is SpanKind.SERVER
    assert (done.start_unix_nano, done.end_unix_nano) == (1_000, 5_000)
    assert dict(done.attributes) == {
        "http.request.method": "GET",
        "url.path": "/books/1",
        "url.scheme": "http",
        "url.query": "x=2",
        "server.address": "web.demo.svc.cluster.local",
        "server.port": 8080,
        "http.response.status_code": 200,
    }
    assert done.trace_state == "rojo=1"
    assert not done.error


def test_absolute_form_targets_ipv6_hosts_and_long_paths() -> None:
    ctx = _context()
    active = start_span(
        ctx,  # type: ignore[arg-type]
        kind=SpanKind.CLIENT,
        method="POST",
        target="http://[::1]:81/" + "p" * 5000,
        authority="[::1]:81",
        scheme="",
        now_unix_nano=10,
        random_bytes=lambda n: b"\x01" * n,
    )
    attrs = dict(active.attributes)
    assert attrs["server.address"] == "::1"
    assert attrs["server.port"] == 81
    assert len(str(attrs["url.path"])) == MAX_ATTRIBUTE_CHARS
    done = finish_span(active, status=None, now_unix_nano=5, error="connect_failure")
    assert done.error
    assert done.end_unix_nano == 10
    assert "http.response.status_code" not in dict(done.attributes)
    assert dict(done.attributes)["error.type"] == "connect_failure"


def test_span_ids_are_never_all_zero() -> None:
    draws = iter([bytes(8), bytes(8), b"\x00" * 7 + b"\x01"])
    assert new_span_id(lambda n: next(draws)) == b"\x00" * 7 + b"\x01"


def test_the_tracer_ignores_unsampled_and_absent_contexts() -> None:
    spans: list[FinishedSpan] = []
    tracer = Tracer(spans.append, random_bytes=lambda n: b"\x05" * n, wall_clock_ns=lambda: 1)
    unsampled = [(b"traceparent", f"00-{TRACE}-{PARENT}-00".encode())]
    assert tracer.start(unsampled, inbound=True, method=b"GET", target=b"/", authority=None) is None
    assert tracer.start([], inbound=True, method=b"GET", target=b"/", authority=None) is None
    sampled = [(b"traceparent", f"00-{TRACE}-{PARENT}-01".encode())]
    span = tracer.start(sampled, inbound=False, method=b"GET", target=b"/a", authority=b"h:1")
    assert span is not None
    assert span.kind is SpanKind.CLIENT
    out = tracer.propagation_headers(span)
    assert out == [(b"traceparent", f"00-{TRACE}-{'05' * 8}-01".encode())]
    tracer.finish(span, 503)
    assert len(spans) == 1
    assert spans[0].error


def _span(i: int) -> FinishedSpan:
    return FinishedSpan(
        trace_id=b"\x01" * 16,
        span_id=i.to_bytes(8, "big"),
        parent_span_id=b"\x02" * 8,
        name="/",
        kind=SpanKind.SERVER,
        start_unix_nano=0,
        end_unix_nano=1,
        attributes=(),
    )


def test_the_queue_drops_and_counts_when_full() -> None:
    queue = SpanQueue(BatchConfig(capacity=3, max_batch=10, max_delay=5.0))
    assert [queue.offer(_span(i), now=0.0) for i in range(5)] == [True, True, True, False, False]
    assert queue.dropped == 2
    assert len(queue) == 3


def test_batches_go_out_by_age_or_size() -> None:
    queue = SpanQueue(BatchConfig(capacity=100, max_batch=4, max_delay=5.0))
    assert queue.due_at() is None
    assert queue.take(100.0) == []
    queue.offer(_span(1), now=10.0)
    queue.offer(_span(2), now=12.0)
    assert queue.due_at() == 15.0
    assert queue.take(14.9) == []
    assert [s.span_id[-1] for s in queue.take(15.0)] == [1, 2]
    assert queue.due_at() is None
    for i in range(10):
        queue.offer(_span(i), now=20.0)
    assert queue.due_at() == 20.0  # a full batch is due at once
    assert len(queue.take(20.0)) == 4
    assert len(queue.take(20.0)) == 4
    assert queue.take(20.0) == []  # two left: they wait for the delay
    assert len(queue.take(20.0, flush=True)) == 2


def test_batch_config_is_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BatchConfig(capacity=0)
    with pytest.raises(ValueError, match="negative"):
        BatchConfig(max_delay=-1)


def test_resource_attributes_follow_linkerds_precedence(tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.write_text('app="web"\nversion="v2"\nbroken-line\nservice.name="from-labels"\n')
    attrs = resource_attributes(
        service_name="web-proxy",
        labels_path=str(labels),
        extra='k8s.pod.uid="u-1"\nversion=v3',
        environ={"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=a%2Cb"},
        pid=42,
        start_timestamp=1700,
        hostname="web-1",
    )
    as_dict = dict(attrs)
    assert as_dict["service.name"] == "from-labels"  # later sources win, as in Linkerd
    assert as_dict["app"] == "web"
    assert as_dict["version"] == "v3"
    assert as_dict["k8s.pod.uid"] == "u-1"
    assert as_dict["team"] == "a,b"
    assert (as_dict["process.pid"], as_dict["host.name"]) == (42, "web-1")
    missing = resource_attributes(
        service_name=None,
        labels_path=str(tmp_path / "absent"),
        extra=None,
        environ={},
        pid=1,
        start_timestamp=0,
        hostname="h",
    )
    assert dict(missing)["service.name"] == "gossamer-proxy"


def test_the_export_request_carries_ids_kind_flags_and_resource() -> None:
    span = FinishedSpan(
        trace_id=bytes.fromhex(TRACE),
        span_id=b"\x09" * 8,
        parent_span_id=bytes.fromhex(PARENT),
        name="/x",
        kind=SpanKind.CLIENT,
        start_unix_nano=1,
        end_unix_nano=2,
        attributes=(("http.request.method", "GET"), ("http.response.status_code", 502)),
        trace_state="rojo=1",
        error=True,
        error_message="connect_failure",
    )
    request = export_request([("service.name", "web")], [span])
    wire = type(request).FromString(request.SerializeToString())
    (rs,) = wire.resource_spans
    assert rs.resource.attributes[0].key == "service.name"
    assert rs.resource.attributes[0].value.string_value == "web"
    (ss,) = rs.scope_spans
    assert ss.scope.name == "gossamer-proxy"
    (out,) = ss.spans
    assert out.trace_id.hex() == TRACE
    assert out.parent_span_id.hex() == PARENT
    assert out.kind == otlp_trace_pb2.Span.SPAN_KIND_CLIENT
    assert out.flags == 0x301  # sampled, and the parent is remote
    assert out.trace_state == "rojo=1"
    assert out.attributes[1].value.int_value == 502
    assert out.status.code == otlp_trace_pb2.Status.STATUS_CODE_ERROR


def test_resource_values_that_utf8_cannot_carry_are_replaced() -> None:
    attrs = dict(
        resource_attributes(
            service_name="web\udcff",  # an undecodable byte from the environment
            labels_path=None,
            extra=None,
            environ={},
            pid=1,
            start_timestamp=0,
            hostname="h",
        )
    )
    assert attrs["service.name"] == "web?"
    export_request(list(attrs.items()), []).SerializeToString()  # would raise otherwise
