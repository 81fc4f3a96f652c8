"""Send queued spans to the collector: OTLP over gRPC, one unary ``Export`` per batch.

Why grpclib and our own protos, not the OpenTelemetry SDK: the sidecar's budget is 40 MB,
and the SDK with its OTLP exporter brings grpcio's C core (15-23 MB resident, the reason the
proxy's control-plane clients use grpclib, see ``libs/api/generate.py``), plus the SDK's
context, processor and semantic-convention packages. The proxy needs none of the SDK's span
API: it never creates spans in-process, it only records one per forwarded request. What it
needs is the OTLP wire format (five messages from the spec, ``libs/api/proto/.../otlp_*``),
a bounded queue (:mod:`.batching`) and a client, which grpclib already is, on the channel the
proxy uses for its control plane (mTLS to the collector's identity when
``LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME`` is set).

The request path never waits on the exporter: :meth:`SpanExporter.submit` queues (or drops
and counts) and at most wakes the export task. One export is in flight at a time, bounded by
:data:`EXPORT_TIMEOUT`; a failed batch is dropped and counted, never retried, so a dead
collector costs the proxy at most the queue's memory.

Metrics: linkerd2-proxy's ``opentelemetry_span_export_streams``, ``..._requests`` and
``opentelemetry_span_exports``, plus ``opentelemetry_span_drops_total{reason}`` where
``reason`` is ``queue_full`` or ``export_failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import structlog
from gossamer_api.proxy.otlp_trace_service_grpc import TraceServiceStub
from gossamer_common.metrics import MetricSnapshot, Registry, Sample
from grpclib.client import Channel

from .batching import SpanQueue
from .otlp import export_request
from .spans import AttributeValue, FinishedSpan

__all__ = ["EXPORT_TIMEOUT", "SpanExporter"]

_log = structlog.get_logger("gossamer.proxy.tracing")

#: Most seconds one ``Export`` call may take before its batch is given up.
EXPORT_TIMEOUT = 10.0
#: At shutdown, queued spans get this long to go out.
FLUSH_TIMEOUT = 2.0
#: While exports keep failing, a warning is logged at most this often (seconds).
FAILURE_LOG_INTERVAL = 60.0


class SpanExporter:
    def __init__(
        self,
        channel_factory: Callable[[], Channel],
        queue: SpanQueue,
        resource: Sequence[tuple[str, AttributeValue]],
        registry: Registry,
        *,
        clock: Callable[[], float],
        export_timeout: float = EXPORT_TIMEOUT,
    ) -> None:
        self._channel_factory = channel_factory
        self._channel: Channel | None = None
        self._stub: TraceServiceStub | None = None
        self.queue = queue
        self._resource = tuple(resource)
        self._clock = clock
        self._export_timeout = export_timeout
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.streams = 0
        self.requests = 0
        self.exported = 0
        self.failed_spans = 0
        #: When a failed export was last logged (``None``: the last export succeeded).
        self._failure_logged_at: float | None = None
        self._failures_unlogged = 0
        registry.register_collector(
            self._collect,
            names=(
                "opentelemetry_span_export_streams",
                "opentelemetry_span_export_requests",
                "opentelemetry_span_exports",
                "opentelemetry_span_drops",
            ),
        )

    def _collect(self) -> list[MetricSnapshot]:
        return [
            MetricSnapshot(
                "opentelemetry_span_export_streams",
                "Total count of opened span export streams",
                "counter",
                (Sample(self.streams),),
            ),
            MetricSnapshot(
                "opentelemetry_span_export_requests",
                "Total count of span export request messages",
                "counter",
                (Sample(self.requests),),
            ),
            MetricSnapshot(
                "opentelemetry_span_exports",
                "Total count of spans exported",
                "counter",
                (Sample(self.exported),),
            ),
            MetricSnapshot(
                "opentelemetry_span_drops",
                "Spans not exported: the queue was full, or the collector failed the export",
                "counter",
                (
                    Sample(self.queue.dropped, (("reason", "queue_full"),), "_total"),
                    Sample(self.failed_spans, (("reason", "export_failed"),), "_total"),
                ),
            ),
        ]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def submit(self, span: FinishedSpan) -> None:
        """Queue a finished span (never waits; dropped and counted when the queue is full)."""
        queue = self.queue
        if queue.offer(span, self._clock()) and (
            len(queue) == 1 or len(queue) >= queue.config.max_batch
        ):
            self._wake.set()

    async def _run(self) -> None:
        while not self._closing:
            due = self.queue.due_at()
            now = self._clock()
            if due is None or due > now:
                self._wake.clear()
                timeout = None if due is None else due - now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            batch = self.queue.take(now)
            if batch:
                await self._export(batch, self._export_timeout)

    async def _export(self, batch: list[FinishedSpan], limit: float) -> bool:
        request = export_request(self._resource, batch)
        self.streams += 1
        try:
            if self._stub is None:
                # Made at the first export, by when the proxy usually holds its certificate.
                self._channel = self._channel_factory()
                self._stub = TraceServiceStub(self._channel)
            response = await self._stub.Export(request, timeout=limit)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed_spans += len(batch)
            self._log_failure(exc)
            return False
        if self._failure_logged_at is not None:
            _log.info("span_export_recovered", failed_exports=self._failures_unlogged)
            self._failure_logged_at = None
            self._failures_unlogged = 0
        self.requests += 1
        rejected = min(max(response.partial_success.rejected_spans, 0), len(batch))
        self.exported += len(batch) - rejected
        self.failed_spans += rejected
        if rejected:
            _log.info("span_export_partial", rejected=rejected)
        return True

    def _log_failure(self, exc: Exception) -> None:
        """A warning when exports start failing, then at most one per interval."""
        now = self._clock()
        last = self._failure_logged_at
        if last is not None and now - last < FAILURE_LOG_INTERVAL:
            self._failures_unlogged += 1
            return
        _log.warning(
            "span_export_failed",
            error=repr(exc)[:200],
            failed_exports_since_last_warning=self._failures_unlogged,
            spans_dropped_total=self.failed_spans,
        )
        self._failure_logged_at = now
        self._failures_unlogged = 0

    async def close(self) -> None:
        """Let an export in flight finish (briefly), then give what is queued one last one."""
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=FLUSH_TIMEOUT)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        batch = self.queue.take(self._clock(), flush=True)
        if batch:
            await self._export(batch, FLUSH_TIMEOUT)
        if self._channel is not None:
            self._channel.close()
