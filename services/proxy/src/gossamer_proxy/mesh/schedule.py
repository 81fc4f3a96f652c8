"""When to ask for the next certificate (sans-io).

Linkerd's proxy refreshes its certificate at 70% of its remaining lifetime, clamped to
``[LINKERD2_PROXY_IDENTITY_MIN_REFRESH, LINKERD2_PROXY_IDENTITY_MAX_REFRESH]`` (10 s, 24 h)
(linkerd-wire.md §2, proxy step 4). A failed Certify is retried with jittered exponential
backoff starting at the minimum refresh; while the service is down the current certificate
stays in use until it expires, so the retry delay never pushes past expiry when there is
still time to renew. Times are wall-clock seconds (certificate validity is wall-clock),
passed in by the caller.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gossamer_proxy.mesh.backoff import Backoff, UniformSource

__all__ = ["CertState", "RenewalSchedule", "refresh_delay"]

REFRESH_FRACTION = 0.7


def refresh_delay(
    now: float, not_before: float, not_after: float, *, min_refresh: float, max_refresh: float
) -> float:
    """Seconds from ``now`` until the refresh of a certificate valid ``not_before..not_after``.

    The target is 70% into the certificate's lifetime; if that is already past (a late
    start, or a certificate issued with a large clock-skew allowance), 70% of what remains.
    """
    lifetime = max(0.0, not_after - not_before)
    delay = not_before + REFRESH_FRACTION * lifetime - now
    if delay <= 0:
        delay = REFRESH_FRACTION * max(0.0, not_after - now)
    return min(max_refresh, max(min_refresh, delay))


class CertState(enum.Enum):
    NONE = "none"
    VALID = "valid"
    EXPIRED = "expired"


@dataclass(slots=True)
class RenewalSchedule:
    """Tracks the installed certificate's validity and decides the next Certify attempt."""

    min_refresh: float = 10.0
    max_refresh: float = 86400.0
    retry_max: float = 60.0
    jitter_ratio: float = 0.2
    not_before: float | None = None
    not_after: float | None = None
    failures: int = 0

    def state(self, now: float) -> CertState:
        if self.not_after is None:
            return CertState.NONE
        return CertState.VALID if now < self.not_after else CertState.EXPIRED

    def on_certified(self, now: float, not_before: float, not_after: float) -> float:
        """A certificate was installed; returns the delay until the next refresh."""
        self.not_before, self.not_after = not_before, not_after
        self.failures = 0
        return refresh_delay(
            now,
            not_before,
            not_after,
            min_refresh=self.min_refresh,
            max_refresh=self.max_refresh,
        )

    def on_failure(self, now: float, rng: UniformSource) -> float:
        """A Certify attempt failed; returns the delay until the retry."""
        backoff = Backoff(
            min=self.min_refresh,
            max=max(self.min_refresh, self.retry_max),
            jitter_ratio=self.jitter_ratio,
        )
        delay = backoff.delay(self.failures, rng)
        self.failures += 1
        if self.not_after is not None and now < self.not_after:
            # Still valid: make sure at least one more attempt happens before expiry.
            remaining = self.not_after - now
            delay = min(delay, max(remaining / 2, self.min_refresh))
        return delay
