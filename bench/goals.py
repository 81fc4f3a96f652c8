"""Issue 21's goals, each evaluated from the rounds: ✓/✗, and whether the noise decides it.

A goal compares Gossamer with a reference target of the same topology (Envoy, or nginx
as a proxy) as a ratio paired round by round, or holds an absolute figure (RSS). The
verdict uses the median; when the rounds' range is wider than the distance between the
median and the goal, the verdict could flip on another run and the report says so.

With a baseline revision in the run, every goal's quantity is also compared with the
baseline's (current ÷ baseline, paired by round): issue 16 allows at most a 5% loss.

Issue 19's tap goals: a proxy serving tap that nobody taps costs nothing measurable (the
ratio to the same proxy with tap off is *within noise*: the rounds' range holds 1.0, or the
median is within :data:`NOISE_TOLERANCE` of it), and tapping every request at c=64 loses no
request (wrk sees no error and no non-2xx answer).

An rps goal is also judged on the requests that failed: when more than
:data:`~bench.loadgen.ERROR_RATE_LIMIT` of its row's requests failed (over all rounds), the
goal is not met whatever the rate, since a proxy that answers errors fast is not fast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bench.measured import RowErrors, Targets
from bench.rounds import Spread, paired_ratios

__all__ = [
    "BASELINE_TOLERANCE",
    "GOALS",
    "NOISE_TOLERANCE",
    "Goal",
    "Verdict",
    "evaluate",
    "verdicts",
]

#: Current ÷ baseline may be at most this much worse (issue 16: "not more than 5%").
BASELINE_TOLERANCE = 0.05
#: A within-noise goal's median may miss 1.0 by this much even when no round reached 1.0.
NOISE_TOLERANCE = 0.03

#: Per-round values of one quantity for one target of a topology (``None``: not measured).
Quantity = Callable[[Targets, str], list[float | None]]


def _field(connections: int, name: str) -> Quantity:
    def quantity(targets: Targets, target: str) -> list[float | None]:
        result = targets.get(target)
        if result is None:
            return []
        return [float(getattr(run, name)) for run in result.runs.get(connections, [])]

    return quantity


def _added(connections: int, name: str) -> Quantity:
    """Latency the proxy adds over ``direct`` in the same round."""

    def quantity(targets: Targets, target: str) -> list[float | None]:
        mine = _field(connections, name)(targets, target)
        direct = _field(connections, name)(targets, "direct")
        return [
            m - d if m is not None and d is not None else None
            for m, d in zip(mine, direct, strict=False)
        ]

    return quantity


def _errors(connections: int) -> Quantity:
    """Failed requests (wrk's errors and non-2xx answers) of one row, per round."""

    def quantity(targets: Targets, target: str) -> list[float | None]:
        result = targets.get(target)
        if result is None:
            return []
        return [float(run.errors) for run in result.runs.get(connections, [])]

    return quantity


def _cpu(targets: Targets, target: str) -> list[float | None]:
    result = targets.get(target)
    return list(result.cpu_seconds_per_10k) if result is not None else []


def _gbps(targets: Targets, target: str) -> list[float | None]:
    result = targets.get(target)
    return list(result.gbytes_per_second) if result is not None else []


def _rss(targets: Targets, target: str) -> list[float | None]:
    result = targets.get(target)
    peak = result.max_rss_mb() if result is not None else None
    return [] if peak is None else [peak]


@dataclass(frozen=True)
class Goal:
    topology: str
    title: str
    quantity: Quantity
    #: The target the ratio is taken against; empty: ``threshold`` is an absolute figure.
    reference: str
    threshold: float
    higher_is_better: bool
    unit: str = "x"
    #: The target whose figures are judged.
    target: str = "gossamer"
    #: The ratio to ``reference`` must be 1.0 within the rounds' noise (``threshold``: the
    #: median's allowed distance from 1.0 when the range does not hold 1.0).
    within_noise: bool = False
    #: The row (connection count) whose failed requests can fail the goal (rps goals).
    error_row: int | None = None

    @property
    def wanted(self) -> str:
        against = f" {self.reference.capitalize()}" if self.reference else ""
        if self.within_noise:
            return f"1x{against} within noise (range holds 1, or ±{self.threshold:.0%})"
        sign = "≥" if self.higher_is_better else "≤"
        return f"{sign} {self.threshold:g}{self.unit}{against}"

    def measure(self, targets: Targets, target: str | None = None) -> list[float]:
        """The per-round values the verdict is taken on."""
        mine = self.quantity(targets, target or self.target)
        if self.reference:
            return paired_ratios(mine, self.quantity(targets, self.reference))
        return [v for v in mine if v is not None]

    def against_baseline(self, targets: Targets) -> list[float]:
        """Current ÷ baseline of the same quantity, per round."""
        return paired_ratios(self.quantity(targets, "gossamer"), self.quantity(targets, "baseline"))


RPS64 = _field(64, "rps")
P99_64 = _field(64, "p99_us")
ADDED_P50_1 = _added(1, "p50_us")

GOALS: tuple[Goal, ...] = (
    Goal("http1", "single hop, HTTP/1.1, rps at c=64", RPS64, "envoy", 2.0, True, error_row=64),
    Goal("http1", "single hop, HTTP/1.1, rps at c=64", RPS64, "nginx", 0.75, True, error_row=64),
    Goal("http1", "single hop, added p50 at c=1", ADDED_P50_1, "envoy", 0.5, False),
    Goal("http1-mtls", "two hops with mTLS, rps at c=64", RPS64, "envoy", 1.5, True, error_row=64),
    Goal("http1-mtls", "two hops with mTLS, p99 at c=64, warm", P99_64, "envoy", 1.0, False),
    Goal(
        "http1-mtls-cold",
        "two hops with mTLS, p99 at c=64, cold (no warm-up)",
        P99_64,
        "envoy",
        1.0,
        False,
    ),
    Goal(
        "grpc-mtls",
        "gRPC unary over two mTLS hops, successful rps at c=64",
        RPS64,
        "envoy",
        1.0,
        True,
        error_row=64,
    ),
    Goal("grpc-mtls", "gRPC unary over two mTLS hops, CPU per request", _cpu, "envoy", 1.0, False),
    Goal("tcp", "opaque TCP, GB/s", _gbps, "envoy", 1.0, True),
    *(
        Goal(topology, f"proxy peak RSS under load ({topology})", _rss, "", 40.0, False, " MB")
        for topology in ("http1", "http1-mtls", "grpc-mtls", "tcp")
    ),
    Goal(
        "tap",
        "tap served, nobody tapping: rps at c=64",
        RPS64,
        "tap-off",
        NOISE_TOLERANCE,
        True,
        within_noise=True,
    ),
    Goal(
        "tap",
        "tap served, nobody tapping: CPU per request",
        _cpu,
        "tap-off",
        NOISE_TOLERANCE,
        False,
        within_noise=True,
    ),
    Goal(
        "tap",
        "tapping every request at c=64: requests lost (errors + non-2xx)",
        _errors(64),
        "",
        0.0,
        False,
        "",
        target="tapped",
    ),
)


@dataclass(frozen=True)
class Verdict:
    goal: Goal
    measured: Spread | None
    baseline: Spread | None = None
    #: The judged target's errors in the goal's ``error_row``, over all rounds.
    errors: RowErrors | None = None

    @property
    def too_many_errors(self) -> bool:
        return self.errors is not None and self.errors.flagged

    @property
    def met(self) -> bool | None:
        """Whether the median meets the goal (with few enough errors); ``None``: not measured."""
        if self.measured is None:
            return None
        if self.too_many_errors:
            return False
        if self.goal.within_noise:
            spread = self.measured
            return spread.low <= 1.0 <= spread.high or (
                abs(spread.median - 1.0) <= self.goal.threshold
            )
        if self.goal.higher_is_better:
            return self.measured.median >= self.goal.threshold
        return self.measured.median <= self.goal.threshold

    @property
    def gap(self) -> float | None:
        """How far the median is from the goal (on either side)."""
        return None if self.measured is None else abs(self.measured.median - self.goal.threshold)

    @property
    def noisy(self) -> bool:
        """The rounds' range is wider than the gap: another run could give the other verdict."""
        return (
            not self.goal.within_noise
            and self.measured is not None
            and self.gap is not None
            and self.measured.count > 1
            and self.measured.width > self.gap
        )

    @property
    def baseline_ok(self) -> bool | None:
        """No worse than the baseline by more than :data:`BASELINE_TOLERANCE`."""
        if self.baseline is None:
            return None
        if self.goal.higher_is_better:
            return self.baseline.median >= 1 - BASELINE_TOLERANCE
        return self.baseline.median <= 1 + BASELINE_TOLERANCE


def evaluate(goal: Goal, targets: Targets) -> Verdict:
    baseline = Spread.of(goal.against_baseline(targets)) if "baseline" in targets else None
    judged = targets.get(goal.target)
    errors = (
        judged.row_errors(goal.error_row)
        if judged is not None and goal.error_row is not None
        else None
    )
    return Verdict(goal, Spread.of(goal.measure(targets)), baseline, errors)


def verdicts(by_topology: Mapping[str, Targets], goals: Sequence[Goal] = GOALS) -> list[Verdict]:
    """The verdict of every goal whose topology ran."""
    return [evaluate(g, by_topology[g.topology]) for g in goals if g.topology in by_topology]
