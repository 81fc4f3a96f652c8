"""What one target of one topology measured, round by round."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field

from bench.loadgen import ERROR_RATE_LIMIT, LoadResult

__all__ = ["RowErrors", "TapSeen", "TargetResult", "Targets", "median_run"]


@dataclass(frozen=True, slots=True)
class RowErrors:
    """One row's failed requests summed over its rounds, against its requests."""

    errors: int
    requests: int

    @property
    def rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def flagged(self) -> bool:
        """More than :data:`~bench.loadgen.ERROR_RATE_LIMIT` of the requests failed."""
        return self.rate > ERROR_RATE_LIMIT

    def format(self) -> str:
        if not self.errors:
            return "0"
        text = f"{self.errors:,} ({self.rate:.2%})"
        return f"**{text} ⚠**" if self.flagged else text


@dataclass(frozen=True)
class TapSeen:
    """What a tap client saw of one row that it observed (the ``tap`` topology).

    ``requests`` is what the load generator completed; each request yields up to three
    events. The proxy drops events its bounded tap queue cannot hold (never requests), so
    fewer events than ``3 x requests`` means dropped events, not lost requests.
    """

    requests: int
    events: int
    request_inits: int
    response_ends: int
    error: str | None = None

    @property
    def dropped_events(self) -> int:
        """Events the tap did not deliver (at least 0; the last requests' may be extra)."""
        return max(3 * self.requests - self.events, 0)


@dataclass
class TargetResult:
    """Everything measured for one target of one topology; lists hold one entry per round.

    Index ``i`` of every list is round ``i``: a target that fails stops taking part, so its
    lists are a prefix of the rounds and still line up with the other targets'.
    """

    topology: str
    target: str
    label: str = ""  # how the report names it (the baseline names its revision)
    runs: dict[int, list[LoadResult]] = field(default_factory=dict)  # by connection count
    #: CPU seconds of the target's processes per 10k requests at c=64 (per GB for ``tcp``).
    cpu_seconds_per_10k: list[float] = field(default_factory=list)
    #: By measured process name, summed over that process and its children (its workers).
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    #: By measured process name: how many processes its tree held (parent + workers).
    processes: dict[str, int] = field(default_factory=dict)
    gbytes_per_second: list[float] = field(default_factory=list)
    #: Per round, what a tap client observing the c=64 row saw (``tapped`` targets only).
    tap_seen: list[TapSeen] = field(default_factory=list)
    error: str | None = None

    @property
    def name(self) -> str:
        return self.label or self.target

    def add_run(self, run: LoadResult) -> None:
        self.runs.setdefault(run.connections, []).append(run)

    def row_errors(self, connections: int) -> RowErrors | None:
        """The row's errors over every round; ``None`` when the row never ran."""
        runs = self.runs.get(connections)
        if not runs:
            return None
        return RowErrors(sum(r.errors for r in runs), sum(r.requests for r in runs))

    def record_rss(self, rss: Mapping[str, float]) -> None:
        """Keep each process's highest peak (cold rounds start fresh processes)."""
        for name, mb in rss.items():
            self.peak_rss_mb[name] = max(mb, self.peak_rss_mb.get(name, 0.0))

    def record_processes(self, counts: Mapping[str, int]) -> None:
        for name, count in counts.items():
            self.processes[name] = max(count, self.processes.get(name, 0))

    def total_rss_mb(self) -> float | None:
        """Peak RSS summed over every measured process (both proxies of a pair)."""
        return sum(self.peak_rss_mb.values()) if self.peak_rss_mb else None

    def max_rss_mb(self) -> float | None:
        return max(self.peak_rss_mb.values()) if self.peak_rss_mb else None


#: The targets of one topology by name (``direct``, ``gossamer``, ``envoy``, …).
Targets = Mapping[str, TargetResult]


def median_run(result: TargetResult | None, connections: int) -> LoadResult | None:
    """One row's figures as the median over its rounds, each field on its own."""
    runs = result.runs.get(connections) if result is not None else None
    if not runs:
        return None
    return LoadResult(
        connections=connections,
        requests=int(statistics.median(r.requests for r in runs)),
        seconds=statistics.median(r.seconds for r in runs),
        errors=sum(r.errors for r in runs),
        rps=statistics.median(r.rps for r in runs),
        p50_us=statistics.median(r.p50_us for r in runs),
        p99_us=statistics.median(r.p99_us for r in runs),
        p999_us=statistics.median(r.p999_us for r in runs),
    )
