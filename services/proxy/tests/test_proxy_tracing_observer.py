"""Tracing on the observer seam: the propagation step and the span's life (no sockets)."""

from __future__ import annotations

from gossamer_proxy.observe import ConnectionFacts, ObservedRequest, Observers, RequestObserver
from gossamer_proxy.tracing.observer import TracingObserver
from gossamer_proxy.tracing.spans import FinishedSpan, SpanKind
from gossamer_proxy.tracing.tracer import Tracer

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
OURS = "0707070707070707"


class Reader(RequestObserver):
    """An observer that follows every request and never rewrites."""

    def on_request(self, request: ObservedRequest) -> object:
        return True


def _observers(spans: list[FinishedSpan]) -> Observers:
    tracer = Tracer(spans.append, random_bytes=lambda n: b"\x07" * n, wall_clock_ns=lambda: 5)
    return Observers((Reader(), TracingObserver(tracer)))


def _begin(observers: Observers, direction: str, traceparent: str) -> ObservedRequest | None:
    headers = [(b"host", b"api"), (b"traceparent", traceparent.encode())]
    return observers.begin(
        ConnectionFacts(direction, ("10.0.0.1", 5000), ("10.0.0.2", 80), None),
        1,
        method=b"GET",
        scheme=b"http",
        authority=b"api:80",
        path=b"/p",
        uri=b"/p",
        version="HTTP/1.1",
        headers=headers,
        now=1.0,
    )


def test_a_sampled_request_has_its_context_replaced_and_ends_as_a_span() -> None:
    spans: list[FinishedSpan] = []
    observed = _begin(_observers(spans), "inbound", f"00-{TRACE}-{PARENT}-01")
    assert observed is not None
    forward = [
        (b"host", b"api"),
        (b"TraceParent", f"00-{TRACE}-{PARENT}-01".encode()),
        (b"x", b"y"),
    ]
    assert observed.forward_headers(forward) == [
        (b"host", b"api"),
        (b"x", b"y"),
        (b"traceparent", f"00-{TRACE}-{OURS}-01".encode()),
    ]
    observed.forwarded(1.1)
    observed.response(200, (), 1.2)
    observed.end(1.3)
    (span,) = spans
    assert span.kind is SpanKind.SERVER
    assert span.span_id.hex() == OURS
    assert span.parent_span_id.hex() == PARENT
    assert dict(span.attributes)["http.response.status_code"] == 200
    assert not span.error


def test_an_unsampled_request_is_forwarded_as_it_came() -> None:
    spans: list[FinishedSpan] = []
    observed = _begin(_observers(spans), "outbound", f"00-{TRACE}-{PARENT}-00")
    assert observed is not None  # the other observer still follows it
    forward = [(b"traceparent", f"00-{TRACE}-{PARENT}-00".encode())]
    assert observed.forward_headers(forward) == forward
    observed.end(2.0)
    assert spans == []


def test_a_request_the_proxy_answered_is_an_error_span() -> None:
    spans: list[FinishedSpan] = []
    observed = _begin(_observers(spans), "outbound", f"00-{TRACE}-{PARENT}-01")
    assert observed is not None
    observed.answered(502, "CONNECT_FAILURE", 1.5)
    (span,) = spans
    assert span.kind is SpanKind.CLIENT
    assert span.error
    assert dict(span.attributes)["http.response.status_code"] == 502
    assert dict(span.attributes)["error.type"] == "CONNECT_FAILURE"


def test_a_failed_grpc_call_is_an_error_span() -> None:
    spans: list[FinishedSpan] = []
    observed = _begin(_observers(spans), "inbound", f"00-{TRACE}-{PARENT}-01")
    assert observed is not None
    observed.response(200, (), 1.2)
    observed.end(1.3, grpc_status=14)
    (span,) = spans
    assert span.error
    assert dict(span.attributes)["rpc.grpc.status_code"] == 14
