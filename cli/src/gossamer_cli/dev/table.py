"""The demo's live table: per-deployment traffic from the proxies' own metrics (pure).

Each row covers one scrape interval. Rates and percentiles come from the difference between
two scrapes of Linkerd's metrics: ``request_total`` (with its ``tls`` label for the mTLS
share), ``response_total`` (``classification``) and ``response_latency_ms`` buckets. A
deployment that serves traffic is judged by its inbound side; one that only calls out (a
load generator) by its outbound side.

The mTLS share is of application traffic only: requests whose target (``target_addr``) or
``authority`` is one of the proxy's own ports (admin 4191, tap 4190, inbound 4143, outbound
4140) are the mesh's own business, such as Prometheus scraping a proxy through a meshed
client's proxy or a probe sent to the admin port, and are left out of it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from gossamer_cli.dev.promtext import Sample

#: The proxy's own ports: traffic to them is not the application's.
PROXY_PORTS = frozenset({4140, 4143, 4190, 4191})


def _port(address: str) -> int | None:
    """The port of ``host:port``, ``[v6]:port`` or ``host`` (``None``)."""
    _, sep, port = address.rpartition(":")
    if not sep or "]" in port or not port.isdigit():
        return None
    return int(port)


def is_application_traffic(sample: Sample) -> bool:
    """Whether a request series is the application's, not a scrape or probe of a proxy."""
    for label in ("target_addr", "authority"):
        if _port(sample.label(label)) in PROXY_PORTS:
            return False
    return True


@dataclass
class Counters:
    """Cumulative counters of one pod's proxy for one direction."""

    requests: float = 0.0
    #: Application requests (:func:`is_application_traffic`) and those of them over mTLS.
    app_requests: float = 0.0
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
            d(self.app_requests, earlier.app_requests),
            d(self.mtls_requests, earlier.mtls_requests),
            d(self.success, earlier.success),
            d(self.failure, earlier.failure),
            {le: d(v, earlier.buckets.get(le, 0.0)) for le, v in self.buckets.items()},
        )

    def add(self, other: Counters) -> None:
        self.requests += other.requests
        self.app_requests += other.app_requests
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
            if is_application_traffic(s):
                c.app_requests += s.value
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
        mtls_share=window.mtls_requests / window.app_requests if window.app_requests else None,
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


#: ANSI: move to the start of the line N lines up (CSI n F), erase to the end of the line
#: (CSI K), erase from the cursor to the end of the screen (CSI J).
_LINES_UP = "\x1b[{}F"
ERASE_LINE = "\x1b[K"
ERASE_BELOW = "\x1b[J"


class Screen:
    """Frames of the live table as bytes for a terminal, or as plain appended text.

    On a terminal each frame overwrites the previous one in place, like ``top``: the cursor
    goes back up over the lines the last frame wrote, every line is rewritten and cleared to
    its end, and whatever the last frame left below is erased. What was printed before the
    first frame (the log file's path) stays on screen above the table. Anything else (a pipe,
    a file) gets each table appended, separated by a blank line, with no escape codes.
    """

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self._drawn_lines = 0

    def frame(self, text: str) -> str:
        lines = text.split("\n")
        if not self.tty:
            return "\n".join(lines) + "\n\n"
        up = _LINES_UP.format(self._drawn_lines) if self._drawn_lines else ""
        self._drawn_lines = len(lines)
        return up + "".join(f"{line}{ERASE_LINE}\n" for line in lines) + ERASE_BELOW
