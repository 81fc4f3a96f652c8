"""The span exporter against a real OTLP/gRPC receiver on loopback, and without one."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from gossamer_common.metrics import Registry
from gossamer_proxy.mesh.channels import control_channel
from gossamer_proxy.tracing.batching import BatchConfig, SpanQueue
from gossamer_proxy.tracing.exporter import SpanExporter
from gossamer_proxy.tracing.spans import FinishedSpan, SpanKind
from otlp_receiver import OtlpReceiver


def _span(i: int) -> FinishedSpan:
    return FinishedSpan(
        trace_id=b"\x01" * 16,
        span_id=(i + 1).to_bytes(8, "big"),
        parent_span_id=b"\x02" * 8,
        name=f"/{i}",
        kind=SpanKind.SERVER,
        start_unix_nano=1,
        end_unix_nano=2,
        attributes=(("http.response.status_code", 200),),
    )


def _metric(registry: Registry, line_start: str) -> float:
    for line in registry.render().decode().splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not rendered")


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    r = OtlpReceiver()
    await r.start()
    yield r
    await r.close()


def _exporter(port: int, registry: Registry, config: BatchConfig) -> SpanExporter:
    loop = asyncio.get_running_loop()
    return SpanExporter(
        lambda: control_channel(f"127.0.0.1:{port}", server_name=None, trust_anchors_pem=None),
        SpanQueue(config),
        [("service.name", "test-proxy")],
        registry,
        clock=loop.time,
    )


async def test_a_full_batch_is_exported_at_once(receiver: OtlpReceiver) -> None:
    registry = Registry()
    exporter = _exporter(receiver.port, registry, BatchConfig(max_batch=3, max_delay=3600))
    exporter.start()
    for i in range(3):
        exporter.submit(_span(i))
    spans = await receiver.wait_for_spans(3)
    assert [s.span.name for s in spans] == ["/0", "/1", "/2"]
    assert {s.service_name for s in spans} == {"test-proxy"}
    assert len(receiver.requests) == 1
    await exporter.close()
    assert _metric(registry, "opentelemetry_span_exports") == 3
    assert _metric(registry, "opentelemetry_span_export_requests") == 1


async def test_a_partial_batch_waits_for_close_and_is_flushed(receiver: OtlpReceiver) -> None:
    registry = Registry()
    exporter = _exporter(receiver.port, registry, BatchConfig(max_batch=10, max_delay=3600))
    exporter.start()
    exporter.submit(_span(0))
    await asyncio.sleep(0)  # the export task runs, finds nothing due, and waits
    assert receiver.requests == []
    await exporter.close()
    assert [s.span.name for s in receiver.spans()] == ["/0"]


async def test_rejected_spans_are_counted(receiver: OtlpReceiver) -> None:
    receiver.reject = 1
    registry = Registry()
    exporter = _exporter(receiver.port, registry, BatchConfig(max_batch=2, max_delay=3600))
    exporter.start()
    exporter.submit(_span(0))
    exporter.submit(_span(1))
    await receiver.wait_for_spans(2)
    await exporter.close()
    assert _metric(registry, "opentelemetry_span_exports") == 1
    assert _metric(registry, 'opentelemetry_span_drops_total{reason="export_failed"}') == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_dead_collector_drops_and_counts_and_never_blocks() -> None:
    registry = Registry()
    exporter = _exporter(
        _closed_port(), registry, BatchConfig(capacity=4, max_batch=2, max_delay=3600)
    )
    exporter.start()
    for i in range(10):  # submit is synchronous: it cannot wait on the collector
        exporter.submit(_span(i))
    assert _metric(registry, 'opentelemetry_span_drops_total{reason="queue_full"}') == 6
    async with asyncio.timeout(10):
        while exporter.failed_spans < 4:  # noqa: ASYNC110 - bounded poll
            await asyncio.sleep(0.01)
    await exporter.close()
    assert _metric(registry, 'opentelemetry_span_drops_total{reason="export_failed"}') == 4
    assert _metric(registry, "opentelemetry_span_exports") == 0


async def test_failures_are_logged_once_per_interval_and_recovery_once(
    receiver: OtlpReceiver,
) -> None:
    from structlog.testing import capture_logs

    now = [0.0]
    exporter = SpanExporter(
        lambda: control_channel(
            f"127.0.0.1:{_closed_port()}", server_name=None, trust_anchors_pem=None
        ),
        SpanQueue(BatchConfig(max_batch=1, max_delay=3600)),
        [],
        Registry(),
        clock=lambda: now[0],
    )
    with capture_logs() as logs:
        for t in (0.0, 1.0, 2.0, 61.0):
            now[0] = t
            assert not await exporter._export([_span(0)], 5.0)
        # the collector is back (at a new address, so a new channel): one recovery line
        assert exporter._channel is not None
        exporter._channel.close()
        exporter._stub = None
        exporter._channel_factory = lambda: control_channel(
            f"127.0.0.1:{receiver.port}", server_name=None, trust_anchors_pem=None
        )
        assert await exporter._export([_span(1)], 5.0)
    events = [e["event"] for e in logs]
    assert events == ["span_export_failed", "span_export_failed", "span_export_recovered"]
    assert logs[1]["failed_exports_since_last_warning"] == 2
    assert exporter.failed_spans == 4
    await exporter.close()
