"""What the request path calls: start a span for a sampled request, rewrite its trace headers,
finish the span with the response.

:class:`Tracer` holds no per-request state; each request carries its own
:class:`~.spans.ActiveSpan` from :meth:`Tracer.start` to :meth:`Tracer.finish`. A request
without a trace context, or with an unsampled one, gets ``None`` from :meth:`Tracer.start`
and is forwarded untouched (Linkerd traces only what arrives sampled).

:func:`tracing_from_settings` builds the tracer and its exporter; the proxy imports this
module only when a collector is configured.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from gossamer_common.metrics import Registry

from .batching import BatchConfig, SpanQueue
from .propagation import extract, propagation_headers
from .resource import resource_attributes
from .spans import ActiveSpan, FinishedSpan, SpanKind, finish_span, start_span

if TYPE_CHECKING:
    from ..mesh.tls_contexts import Credentials
    from .exporter import SpanExporter

__all__ = ["TraceSettingsError", "Tracer", "tracing_from_settings"]

Header = tuple[bytes, bytes]


class TraceSettingsError(ValueError):
    """The trace collector settings cannot be used."""


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode("latin-1")


class Tracer:
    def __init__(
        self,
        submit: Callable[[FinishedSpan], None],
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._submit = submit
        self._random_bytes = random_bytes
        self._now = wall_clock_ns

    def start(
        self,
        headers: Iterable[Header],
        *,
        inbound: bool,
        method: bytes | str,
        target: bytes | str,
        authority: bytes | str | None,
        scheme: str = "",
    ) -> ActiveSpan | None:
        """A span for this request when it arrived with a sampled context, else ``None``."""
        context = extract(headers)
        if context is None or not context.sampled:
            return None
        return start_span(
            context,
            kind=SpanKind.SERVER if inbound else SpanKind.CLIENT,
            method=_text(method),
            target=_text(target),
            authority=_text(authority) if authority else "",
            scheme=scheme,
            now_unix_nano=self._now(),
            random_bytes=self._random_bytes,
        )

    @staticmethod
    def propagation_headers(span: ActiveSpan) -> list[Header]:
        """The headers to set on the forwarded request so the next hop's span is a child
        of ``span`` (each replaces the received headers of its name)."""
        return propagation_headers(span.context, span.span_id)

    def finish(
        self,
        span: ActiveSpan,
        status: int | None,
        error: str = "",
        *,
        grpc_status: int | None = None,
    ) -> None:
        """Record the response (``status`` ``None``: none came) and queue the span."""
        self._submit(
            finish_span(
                span,
                status=status,
                now_unix_nano=self._now(),
                error=error,
                grpc_status=grpc_status,
            )
        )


def tracing_from_settings(
    *,
    collector_addr: str,
    collector_name: str | None,
    protocol: str,
    service_name: str | None,
    attributes_path: str | None,
    extra_attributes: str | None,
    environ: Mapping[str, str],
    registry: Registry,
    trust_anchors_pem: str | None,
    credentials: Callable[[], Credentials | None] | None,
    batch_delay: float = 5.0,
) -> tuple[Tracer, SpanExporter]:
    """The tracer and its (not yet started) exporter, on a channel to the collector."""
    if protocol != "opentelemetry":
        raise TraceSettingsError(
            f"LINKERD2_PROXY_TRACE_PROTOCOL={protocol!r} is not supported (only opentelemetry)"
        )
    from grpclib.client import Channel

    from ..mesh.channels import control_channel, split_host_port
    from .exporter import SpanExporter

    split_host_port(collector_addr)  # a malformed address stops the start, not the first export
    if collector_name and not trust_anchors_pem:
        raise TraceSettingsError(
            "LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME needs the proxy's identity (trust anchors)"
        )

    def channel() -> Channel:
        return control_channel(
            collector_addr,
            server_name=collector_name,
            trust_anchors_pem=trust_anchors_pem,
            credentials=credentials() if credentials is not None else None,
        )

    resource = resource_attributes(
        service_name=service_name,
        labels_path=attributes_path,
        extra=extra_attributes,
        environ=environ,
        pid=os.getpid(),
        start_timestamp=int(time.time()),
        hostname=environ.get("HOSTNAME") or socket.gethostname(),
    )
    loop = asyncio.get_running_loop()
    exporter = SpanExporter(
        channel, SpanQueue(BatchConfig(max_delay=batch_delay)), resource, registry, clock=loop.time
    )
    return Tracer(exporter.submit), exporter
