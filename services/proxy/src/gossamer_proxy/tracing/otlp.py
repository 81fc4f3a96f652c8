"""Finished spans to an OTLP ``ExportTraceServiceRequest`` (the protobuf messages).

One ``ResourceSpans`` (the proxy's resource) with one ``ScopeSpans`` (scope
``gossamer-proxy``) holding the batch. ``flags`` carries the W3C trace flags and says that
the parent is remote (bits 8 and 9): every proxy span's parent is in another process.
"""

from __future__ import annotations

from collections.abc import Sequence

from gossamer_api.proxy import (
    otlp_common_pb2,
    otlp_resource_pb2,
    otlp_trace_pb2,
    otlp_trace_service_pb2,
)

from .spans import AttributeValue, FinishedSpan

__all__ = ["SCOPE_NAME", "export_request"]

SCOPE_NAME = "gossamer-proxy"
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200


def _key_values(
    attributes: Sequence[tuple[str, AttributeValue]],
) -> list[otlp_common_pb2.KeyValue]:
    out = []
    for key, value in attributes:
        if isinstance(value, int):
            any_value = otlp_common_pb2.AnyValue(int_value=value)
        else:
            any_value = otlp_common_pb2.AnyValue(string_value=value)
        out.append(otlp_common_pb2.KeyValue(key=key, value=any_value))
    return out


def _span(span: FinishedSpan) -> otlp_trace_pb2.Span:
    status = otlp_trace_pb2.Status(
        code=otlp_trace_pb2.Status.STATUS_CODE_ERROR
        if span.error
        else otlp_trace_pb2.Status.STATUS_CODE_UNSET,
        message=span.error_message,
    )
    return otlp_trace_pb2.Span(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        trace_state=span.trace_state,
        flags=(span.trace_flags & 0xFF) | _HAS_IS_REMOTE | _IS_REMOTE,
        name=span.name,
        kind=int(span.kind),  # type: ignore[arg-type]
        start_time_unix_nano=span.start_unix_nano,
        end_time_unix_nano=span.end_unix_nano,
        attributes=_key_values(span.attributes),
        status=status,
    )


def export_request(
    resource: Sequence[tuple[str, AttributeValue]],
    spans: Sequence[FinishedSpan],
    *,
    scope_version: str = "",
) -> otlp_trace_service_pb2.ExportTraceServiceRequest:
    scope = otlp_common_pb2.InstrumentationScope(name=SCOPE_NAME, version=scope_version)
    resource_spans = otlp_trace_pb2.ResourceSpans(
        resource=otlp_resource_pb2.Resource(attributes=_key_values(resource)),
        scope_spans=[otlp_trace_pb2.ScopeSpans(scope=scope, spans=[_span(s) for s in spans])],
    )
    return otlp_trace_service_pb2.ExportTraceServiceRequest(resource_spans=[resource_spans])
