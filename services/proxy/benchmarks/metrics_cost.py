"""Measure what the proxy's per-request metric updates cost (``python -m`` or run directly).

One HTTP request through the proxy does exactly this to metrics: one ``request_total``
increment, one latency observation and one ``response_total`` increment on objects the
connection already holds. The script times those three operations in a tight loop and
compares them with the proxy's whole per-request CPU budget measured by ``make bench``
(tens of microseconds), so "costs nothing measurable" is a number, not a claim.
"""

from __future__ import annotations

import time

from gossamer_proxy.metrics import ProxyMetrics, TargetLabels


def per_request_ns(iterations: int = 1_000_000) -> float:
    metrics = ProxyMetrics()
    stats = metrics.http(TargetLabels("outbound", "10.0.0.7", 8080, inbound=False), "web:8080")
    started = time.perf_counter_ns()
    for i in range(iterations):
        stats.requests.value += 1
        stats.observe_latency(200, (i & 63) * 0.37)
        stats.response(200, None)
    elapsed = time.perf_counter_ns() - started
    started = time.perf_counter_ns()
    for i in range(iterations):
        _ = (i & 63) * 0.37
    baseline = time.perf_counter_ns() - started
    return (elapsed - baseline) / iterations


def main() -> None:
    cost = per_request_ns()
    print(f"metrics per request: {cost:.0f} ns")
    for budget_us in (50, 100):
        print(f"  = {100 * cost / (budget_us * 1000):.2f}% of a {budget_us} us request")


if __name__ == "__main__":
    main()
