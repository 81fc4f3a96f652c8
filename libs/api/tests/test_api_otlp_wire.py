"""Our OTLP subset keeps the spec's packages, field numbers and types (any collector reads it).

Numbers and types are copied from opentelemetry-proto v1 (``common/v1/common.proto``,
``resource/v1/resource.proto``, ``trace/v1/trace.proto``,
``collector/trace/v1/trace_service.proto``).
"""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from gossamer_api.proxy import (
    otlp_common_pb2,
    otlp_resource_pb2,
    otlp_trace_pb2,
    otlp_trace_service_pb2,
)
from gossamer_api.proxy.otlp_trace_service_grpc import TraceServiceStub

F = FieldDescriptor
SPEC: dict[str, tuple[Descriptor, dict[str, tuple[int, int]]]] = {
    "opentelemetry.proto.common.v1.AnyValue": (
        otlp_common_pb2.AnyValue.DESCRIPTOR,
        {
            "string_value": (1, F.TYPE_STRING),
            "bool_value": (2, F.TYPE_BOOL),
            "int_value": (3, F.TYPE_INT64),
            "double_value": (4, F.TYPE_DOUBLE),
            "array_value": (5, F.TYPE_MESSAGE),
            "kvlist_value": (6, F.TYPE_MESSAGE),
            "bytes_value": (7, F.TYPE_BYTES),
        },
    ),
    "opentelemetry.proto.common.v1.KeyValue": (
        otlp_common_pb2.KeyValue.DESCRIPTOR,
        {"key": (1, F.TYPE_STRING), "value": (2, F.TYPE_MESSAGE)},
    ),
    "opentelemetry.proto.common.v1.InstrumentationScope": (
        otlp_common_pb2.InstrumentationScope.DESCRIPTOR,
        {
            "name": (1, F.TYPE_STRING),
            "version": (2, F.TYPE_STRING),
            "attributes": (3, F.TYPE_MESSAGE),
            "dropped_attributes_count": (4, F.TYPE_UINT32),
        },
    ),
    "opentelemetry.proto.resource.v1.Resource": (
        otlp_resource_pb2.Resource.DESCRIPTOR,
        {"attributes": (1, F.TYPE_MESSAGE), "dropped_attributes_count": (2, F.TYPE_UINT32)},
    ),
    "opentelemetry.proto.trace.v1.ResourceSpans": (
        otlp_trace_pb2.ResourceSpans.DESCRIPTOR,
        {
            "resource": (1, F.TYPE_MESSAGE),
            "scope_spans": (2, F.TYPE_MESSAGE),
            "schema_url": (3, F.TYPE_STRING),
        },
    ),
    "opentelemetry.proto.trace.v1.ScopeSpans": (
        otlp_trace_pb2.ScopeSpans.DESCRIPTOR,
        {
            "scope": (1, F.TYPE_MESSAGE),
            "spans": (2, F.TYPE_MESSAGE),
            "schema_url": (3, F.TYPE_STRING),
        },
    ),
    "opentelemetry.proto.trace.v1.Span": (
        otlp_trace_pb2.Span.DESCRIPTOR,
        {
            "trace_id": (1, F.TYPE_BYTES),
            "span_id": (2, F.TYPE_BYTES),
            "trace_state": (3, F.TYPE_STRING),
            "parent_span_id": (4, F.TYPE_BYTES),
            "flags": (16, F.TYPE_FIXED32),
            "name": (5, F.TYPE_STRING),
            "kind": (6, F.TYPE_ENUM),
            "start_time_unix_nano": (7, F.TYPE_FIXED64),
            "end_time_unix_nano": (8, F.TYPE_FIXED64),
            "attributes": (9, F.TYPE_MESSAGE),
            "dropped_attributes_count": (10, F.TYPE_UINT32),
            "dropped_events_count": (12, F.TYPE_UINT32),
            "dropped_links_count": (14, F.TYPE_UINT32),
            "status": (15, F.TYPE_MESSAGE),
        },
    ),
    "opentelemetry.proto.trace.v1.Status": (
        otlp_trace_pb2.Status.DESCRIPTOR,
        {"message": (2, F.TYPE_STRING), "code": (3, F.TYPE_ENUM)},
    ),
    "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest": (
        otlp_trace_service_pb2.ExportTraceServiceRequest.DESCRIPTOR,
        {"resource_spans": (1, F.TYPE_MESSAGE)},
    ),
    "opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse": (
        otlp_trace_service_pb2.ExportTraceServiceResponse.DESCRIPTOR,
        {"partial_success": (1, F.TYPE_MESSAGE)},
    ),
    "opentelemetry.proto.collector.trace.v1.ExportTracePartialSuccess": (
        otlp_trace_service_pb2.ExportTracePartialSuccess.DESCRIPTOR,
        {"rejected_spans": (1, F.TYPE_INT64), "error_message": (2, F.TYPE_STRING)},
    ),
}


@pytest.mark.parametrize("full_name", sorted(SPEC))
def test_fields_match_the_otlp_spec(full_name: str) -> None:
    descriptor, fields = SPEC[full_name]
    assert descriptor.full_name == full_name
    for name, (number, kind) in fields.items():
        field = descriptor.fields_by_name[name]
        assert (field.number, field.type) == (number, kind), name


def test_enums_match_the_spec() -> None:
    kinds = otlp_trace_pb2.Span.SpanKind
    assert [kinds.Value(n) for n in ("SPAN_KIND_SERVER", "SPAN_KIND_CLIENT")] == [2, 3]
    codes = otlp_trace_pb2.Status.StatusCode
    assert [
        codes.Value(n) for n in ("STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR")
    ] == [
        0,
        1,
        2,
    ]


def test_export_is_the_collector_path() -> None:
    stub = TraceServiceStub(channel=None)  # type: ignore[arg-type]
    assert stub.Export.name == "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
