"""The demo's live table: per-deployment traffic from the proxies' own metrics (pure).

Each row covers one scrape interval. Rates and percentiles come from the difference between
two scrapes of Linkerd's metrics: ``request_total`` (with its ``tls`` label for the mTLS
share), ``response_total`` (``classification``) and ``response_latency_ms`` buckets. A
deployment that serves traffic is judged by its inbound side; one that only calls out (a
load generator) by its outbound side.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from gossamer_cli.dev.promtext import Sample


@dataclass
class Counters:
    """Cumulative counters of one pod's proxy for one direction."""

    requests: float = 0.0
    mtls_requests: float = 0.0
    success: float = 0.0
    failure: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le → cumulative count

    def minus(self, earlier: Counters) -> Counters:
        # A restarted proxy starts from zero: count from there rather than going negative.
        def d(now: float, then: float) -> float:
            return now - then if now >= then else now

        return Counters(
            d(self.requests, earlier.requests),
            d(self.mtls_requests, earlier.mtls_requests),
            d(self.success, earlier.success),
            d(self.failure, earlier.failure),
            {le: d(v, earlier.buckets.get(le, 0.0)) for le, v in self.buckets.items()},
        )

    def add(self, other: Counters) -> None:
        self.requests += other.requests
        self.mtls_requests += other.mtls_requests
        self.success += other.success
        self.failure += other.failure
        for le, v in other.buckets.items():
            self.buckets[le] = self.buckets.get(le, 0.0) + v


def counters_by_direction(samples: Iterable[Sample]) -> dict[str, Counters]:
    result: dict[str, Counters] = defaultdict(Counters)
    for s in samples:
        direction = s.label("direction")
        if not direction:
            continue
        c = result[direction]
        if s.name == "request_total":
            c.requests += s.value
            if s.label("tls") == "true":
                c.mtls_requests += s.value
        elif s.name == "response_total":
            if s.label("classification") == "success":
                c.success += s.value
            elif s.label("classification") == "failure":
                c.failure += s.value
        elif s.name == "response_latency_ms_bucket":
            le = s.label("le")
            bound = math.inf if le == "+Inf" else float(le)
            c.buckets[bound] = c.buckets.get(bound, 0.0) + s.value
    return dict(result)


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            width = count - below
            return lower + (bound - lower) * ((rank - below) / width if width else 1.0)
        lower, below = bound, count
    return lower


@dataclass(frozen=True)
class Row:
    deployment: str
    pods: int
    direction: str
    success_rate: float | None
    rps: float
    p50: float | None
    p95: float | None
    p99: float | None
    mtls_share: float | None


def row(deployment: str, pods: int, window: Counters, seconds: float, direction: str) -> Row:
    responses = window.success + window.failure
    return Row(
        deployment=deployment,
        pods=pods,
        direction=direction,
        success_rate=window.success / responses if responses else None,
        rps=window.requests / seconds if seconds > 0 else 0.0,
        p50=quantile(window.buckets, 0.50),
        p95=quantile(window.buckets, 0.95),
        p99=quantile(window.buckets, 0.99),
        mtls_share=window.mtls_requests / window.requests if window.requests else None,
    )


def render(rows: Iterable[Row], title: str) -> str:
    header = (
        f"{'DEPLOYMENT':<14} {'PODS':>4} {'DIR':<8} {'SUCCESS':>8} {'RPS':>7} "
        f"{'P50':>8} {'P95':>8} {'P99':>8} {'MTLS':>6}"
    )
    lines = [title, header]
    for r in rows:
        lines.append(
            f"{r.deployment:<14} {r.pods:>4} {r.direction:<8} {_pct(r.success_rate):>8} "
            f"{r.rps:>7.1f} {_ms(r.p50):>8} {_ms(r.p95):>8} {_ms(r.p99):>8} {_pct(r.mtls_share):>6}"
        )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}ms"
