"""Distributed tracing in the proxy: trace-context propagation and OpenTelemetry spans.

Loaded only when a trace collector is configured (``LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR``):
a proxy with tracing off imports none of these modules, nor the OTLP protobuf modules.

- :mod:`.propagation`: W3C ``traceparent``/``tracestate`` and B3 (``x-b3-*`` and single
  ``b3``) parsed from request headers, and the rewrite that makes the proxy's span the parent
  of the next hop's (sans-io).
- :mod:`.spans`: finished spans and their attributes (sans-io).
- :mod:`.batching`: a bounded span queue that batches by size and age (sans-io, time passed in).
- :mod:`.resource`: the resource attributes (service name, pod labels) from the environment.
- :mod:`.otlp`: spans to an OTLP ``ExportTraceServiceRequest``.
- :mod:`.exporter`: the asyncio task that sends batches to the collector over gRPC.
- :mod:`.tracer`: what the request path calls; ties the parts together.
"""
