"""Consecutive-failures failure accrual: eject an endpoint, then probe it back in.

Linkerd's ``FailureAccrual.consecutive_failures`` (linkerd-wire.md §1.8 and §9 outbound step
6): after ``max_failures`` failures in a row (a failure is a response classified as failed, a
transport error or a timeout) the endpoint is taken out of the balancer for a backoff. When
the backoff ends, exactly one request is let through as a probe. Its success restores the
endpoint (and resets the backoff); its failure ejects it again for the next, doubled,
backoff. ``max_failures = 0`` disables accrual.

:class:`UnifiedAccrual` is Linkerd's ``FailureAccrual.unified``: the same consecutive-failure
rule, plus a success rate (outcome counts that decay exponentially over ``decay`` seconds)
that ejects the endpoint once at least ``min_requests`` outcomes were seen and the rate
falls below ``success_rate_threshold``. A successful probe starts the average afresh.

Rules of this file: the three states and their transitions live in
:class:`ConsecutiveFailures`; time and randomness come in as arguments; outcomes of requests
that were dispatched before an ejection and finish during it are ignored, because only the
probe may decide whether the endpoint comes back.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from gossamer_proxy.mesh.backoff import Backoff, UniformSource

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_MAX_FAILURES",
    "AccrualState",
    "ConsecutiveFailures",
    "SuccessRate",
    "UnifiedAccrual",
]

DEFAULT_MAX_FAILURES = 7
"""``balancer.linkerd.io/failure-accrual-consecutive-max-failures`` default."""
DEFAULT_BACKOFF = Backoff(min=1.0, max=60.0, jitter_ratio=0.5)
"""Default ``min-penalty`` 1s, ``max-penalty`` 60s, ``jitter-ratio`` 0.5."""


class AccrualState(enum.Enum):
    AVAILABLE = "available"
    """Taking traffic; counting consecutive failures."""
    EJECTED = "ejected"
    """Out of the balancer until ``reopen_at``; then the next request is the probe."""
    PROBING = "probing"
    """The single probe request is in flight; no other request may use the endpoint."""


class ConsecutiveFailures:
    """Failure accrual for one endpoint."""

    __slots__ = ("_attempt", "_backoff", "_failures", "_max", "reopen_at", "state")

    def __init__(
        self, max_failures: int = DEFAULT_MAX_FAILURES, backoff: Backoff = DEFAULT_BACKOFF
    ) -> None:
        if max_failures < 0:
            raise ValueError(f"max_failures must not be negative, got {max_failures}")
        self._max = max_failures
        self._backoff = backoff
        self._failures = 0
        self._attempt = 0
        self.state = AccrualState.AVAILABLE
        #: When an ejected endpoint may be probed (meaningful in EJECTED only).
        self.reopen_at = 0.0

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def available(self, now: float) -> bool:
        """Whether the balancer may send the next request here (possibly as the probe)."""
        if self.state is AccrualState.AVAILABLE:
            return True
        return self.state is AccrualState.EJECTED and now >= self.reopen_at

    def on_dispatch(self, now: float) -> bool:
        """Record that a request is being sent; returns whether it is the probe.

        Raises :class:`RuntimeError` if the endpoint is not :meth:`available`, since that is
        a balancer bug rather than an endpoint failure.
        """
        if self.state is AccrualState.AVAILABLE:
            return False
        if self.state is AccrualState.EJECTED and now >= self.reopen_at:
            self.state = AccrualState.PROBING
            return True
        raise RuntimeError(f"request dispatched to an endpoint that is {self.state.value}")

    def on_success(self, *, probe: bool = False, now: float | None = None) -> None:
        """A request sent here succeeded (``probe`` as returned by :meth:`on_dispatch`).

        ``now`` matters only to accruals that weigh outcomes over time (:class:`UnifiedAccrual`).
        """
        if self.state is AccrualState.PROBING and probe:
            self.state = AccrualState.AVAILABLE
            self._attempt = 0
            self._failures = 0
        elif self.state is AccrualState.AVAILABLE:
            self._failures = 0

    def on_failure(self, now: float, rng: UniformSource, *, probe: bool = False) -> None:
        """A request sent here failed; may eject the endpoint."""
        if self.state is AccrualState.PROBING and probe:
            self._attempt += 1
            self._eject(now, rng)
        elif self.state is AccrualState.AVAILABLE and self._max > 0:
            self._failures += 1
            if self._failures >= self._max:
                self._attempt = 0
                self._eject(now, rng)

    def on_cancel(self, now: float, *, probe: bool = False) -> None:
        """A request sent here ended without an outcome (client went away, request timeout).

        A cancelled probe proved nothing, so the endpoint may be probed again at once.
        """
        if self.state is AccrualState.PROBING and probe:
            self.state = AccrualState.EJECTED
            self.reopen_at = now

    def _eject(self, now: float, rng: UniformSource) -> None:
        self.state = AccrualState.EJECTED
        self.reopen_at = now + self._backoff.delay(self._attempt, rng)
        self._failures = 0


@dataclass(frozen=True, slots=True)
class SuccessRate:
    """The success-rate half of unified accrual: eject below ``threshold`` (0..1)."""

    threshold: float
    decay: float
    min_requests: int

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"success rate threshold must be in [0, 1], got {self.threshold}")
        if self.decay <= 0.0:
            raise ValueError(f"success rate decay must be positive, got {self.decay}")
        if self.min_requests < 0:
            raise ValueError(f"min_requests must not be negative, got {self.min_requests}")


class UnifiedAccrual(ConsecutiveFailures):
    """Consecutive failures *or* a success rate below the threshold eject the endpoint."""

    __slots__ = ("_rate", "_rate_at", "_seen", "_spec", "_successes", "_total")

    def __init__(
        self,
        success_rate: SuccessRate,
        max_failures: int = DEFAULT_MAX_FAILURES,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        super().__init__(max_failures, backoff)
        self._spec = success_rate
        self._rate = 1.0
        self._successes = 0.0
        self._total = 0.0
        self._rate_at: float | None = None
        self._seen = 0

    @property
    def success_rate(self) -> float:
        return self._rate

    def on_success(self, *, probe: bool = False, now: float | None = None) -> None:
        was_probing = self.state is AccrualState.PROBING and probe
        super().on_success(probe=probe)
        if was_probing:
            self._restart()
        elif self.state is AccrualState.AVAILABLE and now is not None:
            self._observe(1.0, now)

    def on_failure(self, now: float, rng: UniformSource, *, probe: bool = False) -> None:
        if self.state is AccrualState.AVAILABLE and not probe:
            self._observe(0.0, now)
            if self._seen >= self._spec.min_requests and self._rate < self._spec.threshold:
                self._attempt = 0
                self._eject(now, rng)
                self._restart()
                return
        super().on_failure(now, rng, probe=probe)

    def _observe(self, sample: float, now: float) -> None:
        # Decayed counts rather than a per-sample EWMA: outcomes that arrive together weigh
        # the same as outcomes spread out, and older ones fade with ``decay``.
        if self._rate_at is not None:
            weight = math.exp(-max(0.0, now - self._rate_at) / self._spec.decay)
            self._successes *= weight
            self._total *= weight
        self._successes += sample
        self._total += 1.0
        self._rate = self._successes / self._total
        self._rate_at = now
        self._seen += 1

    def _restart(self) -> None:
        self._rate = 1.0
        self._successes = 0.0
        self._total = 0.0
        self._rate_at = None
        self._seen = 0
