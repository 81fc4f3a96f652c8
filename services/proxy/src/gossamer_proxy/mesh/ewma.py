"""Peak-EWMA load of one endpoint: a latency estimate that jumps up fast and decays slowly.

This is the load metric Linkerd's balancers use (linkerd-wire.md §9 outbound step 4): the
estimate starts at ``default_rtt`` (30 ms), an observation *above* the estimate replaces it at
once (the "peak", so a slow endpoint is avoided immediately), and an observation below it is
blended in with weight ``1 - exp(-elapsed/decay)`` (decay 10 s), so the estimate falls back
only as evidence accumulates. Between observations the estimate decays towards zero with the
same time constant, which makes an endpoint that has been idle (perhaps because it was slow)
worth trying again. The cost the balancer compares is ``estimate x (pending + 1)``: requests
in flight multiply the expected latency.

All times are seconds on one monotonic clock, passed in by the caller.
"""

from __future__ import annotations

import math

__all__ = ["DEFAULT_DECAY", "DEFAULT_RTT", "PeakEwma"]

DEFAULT_RTT = 0.030
"""Linkerd's ``PeakEwma.default_rtt``."""
DEFAULT_DECAY = 10.0
"""Linkerd's ``PeakEwma.decay``."""


class PeakEwma:
    """The peak-EWMA latency estimate and in-flight count of one endpoint."""

    __slots__ = ("_decay", "_estimate", "_stamp", "pending")

    def __init__(
        self, now: float, *, default_rtt: float = DEFAULT_RTT, decay: float = DEFAULT_DECAY
    ) -> None:
        if default_rtt < 0:
            raise ValueError(f"default_rtt must not be negative, got {default_rtt}")
        if decay <= 0:
            raise ValueError(f"decay must be positive, got {decay}")
        self._decay = decay
        self._estimate = default_rtt
        self._stamp = now
        #: Requests (HTTP) or connections (opaque TCP) currently in flight.
        self.pending = 0

    def _decayed(self, now: float) -> float:
        elapsed = max(0.0, now - self._stamp)
        return self._estimate * math.exp(-elapsed / self._decay)

    def estimate(self, now: float) -> float:
        """The latency estimate at ``now`` (read-only; idle time decays it towards zero)."""
        return self._decayed(now)

    def cost(self, now: float) -> float:
        """What P2C compares: ``estimate x (pending + 1)``."""
        return self._decayed(now) * (self.pending + 1)

    def start(self) -> None:
        """A request (or connection) was dispatched to this endpoint."""
        self.pending += 1

    def finish(self, rtt: float, now: float) -> None:
        """A request dispatched by :meth:`start` completed after ``rtt`` seconds."""
        if self.pending > 0:
            self.pending -= 1
        self.observe(rtt, now)

    def cancel(self) -> None:
        """A request dispatched by :meth:`start` ended without a usable latency sample."""
        if self.pending > 0:
            self.pending -= 1

    def observe(self, rtt: float, now: float) -> None:
        """Fold one latency sample into the estimate."""
        if rtt < 0 or math.isnan(rtt):
            raise ValueError(f"rtt must be a non-negative number, got {rtt}")
        elapsed = max(0.0, now - self._stamp)
        weight = math.exp(-elapsed / self._decay)
        decayed = self._estimate * weight
        if rtt > decayed:
            self._estimate = rtt
        else:
            # The old estimate keeps weight exp(-elapsed/decay); the new sample gets the rest.
            self._estimate = decayed + rtt * (1.0 - weight)
        self._stamp = max(self._stamp, now)
