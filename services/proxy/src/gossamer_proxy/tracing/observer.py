"""Tracing on the request-observer seam (:mod:`..observe`): one span per sampled request.

:class:`TracingObserver` follows only requests that arrive with a sampled trace context
(its :meth:`~TracingObserver.on_request` returns ``None`` for the rest, so they cost one
header scan and are forwarded untouched). For a sampled one it starts a span (inbound:
``SERVER``, outbound: ``CLIENT``), sets the forwarded trace headers through the seam
(:meth:`~..observe.ObservedRequest.set_request_header`) so the next hop's span is the
proxy's child, and queues the finished span when the response ends. Span times are
wall-clock readings (OTLP wants Unix time) taken at the request and end moments, as
linkerd2-proxy takes them.
"""

from __future__ import annotations

from ..observe import ObservedRequest, RequestObserver
from .spans import ActiveSpan
from .tracer import Tracer

__all__ = ["TracingObserver"]


class TracingObserver(RequestObserver):
    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def on_request(self, request: ObservedRequest) -> ActiveSpan | None:
        span = self.tracer.start(
            request.headers,
            inbound=request.direction == "inbound",
            method=request.method,
            target=request.path or request.uri,
            authority=request.authority,
            scheme=request.scheme.decode("latin-1") if request.scheme else "",
        )
        if span is not None:
            for name, value in self.tracer.propagation_headers(span):
                request.set_request_header(name, value)
        return span

    def on_end(self, request: ObservedRequest, token: object) -> None:
        assert isinstance(token, ActiveSpan)
        status = request.status if request.response_at is not None and request.status else None
        self.tracer.finish(
            token, status, error=request.error or "", grpc_status=request.grpc_status
        )
