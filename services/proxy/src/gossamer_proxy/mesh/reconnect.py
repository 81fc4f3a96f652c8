"""Reconnect backoff: an endpoint whose connect failed is not ready for a while (sans-io).

In Linkerd every balancer endpoint is a service with readiness: once a connect to it fails,
the endpoint is *pending* until its reconnect backoff has passed (outbound connect backoff:
exponential from 100 ms to 500 ms, jittered), and power-of-two-choices never dispatches to
a pending endpoint. Requests go to the other endpoints, or wait in the fail-fast queue
when there are none. Without this, every concurrent request keeps dialling an endpoint
that went away (a terminated pod during a rolling update) until discovery removes it.

:class:`ReconnectBackoff` is that readiness for one endpoint. It is independent of failure
accrual, which is opt-in and judges responses; this one judges only whether a connection
can be made, and is always on. The rules:

* a connect failure makes the endpoint unavailable until ``now + backoff``, the backoff
  growing exponentially with each consecutive failure;
* when the backoff has passed the endpoint is available again: the next pick is, in
  effect, the reconnect attempt;
* concurrent requests that were dispatched before the latest recorded failure bring no new
  evidence (they were all dialling the same dead address), so their failures neither grow
  the backoff nor extend one that is running; if one arrives after the backoff has passed,
  the endpoint evidently still fails and backs off again at the same step;
* a request dispatched after the latest failure that reached the endpoint (any response,
  even a failed one) proves it reachable again and resets the backoff. Older requests
  (already running on an earlier connection, e.g. to a pod that drains while refusing new
  connections) prove nothing about new connects and are ignored.

"Dispatched before the latest failure" is decided by a generation number
(:attr:`ReconnectBackoff.generation`) taken at pick time, not by comparing clocks.
"""

from __future__ import annotations

from typing import Final

from gossamer_proxy.mesh.backoff import Backoff, UniformSource

__all__ = [
    "CONNECT_BACKOFF",
    "CONNECT_BACKOFF_JITTER",
    "CONNECT_BACKOFF_MAX",
    "CONNECT_BACKOFF_MIN",
    "ReconnectBackoff",
]

CONNECT_BACKOFF_MIN: Final = 0.1
"""Seconds an endpoint is pending after its first failed connect (Linkerd: 100 ms)."""
CONNECT_BACKOFF_MAX: Final = 0.5
"""Upper bound of the doubling backoff, before jitter (Linkerd: 500 ms)."""
CONNECT_BACKOFF_JITTER: Final = 0.1
"""Up to this fraction of the delay is added at random, so proxies do not redial in step."""
CONNECT_BACKOFF: Final = Backoff(
    min=CONNECT_BACKOFF_MIN, max=CONNECT_BACKOFF_MAX, jitter_ratio=CONNECT_BACKOFF_JITTER
)
"""The outbound connect backoff every balanced endpoint uses unless told otherwise."""


class ReconnectBackoff:
    """Connect readiness of one endpoint."""

    __slots__ = ("_backoff", "failures", "generation", "until")

    def __init__(self, backoff: Backoff = CONNECT_BACKOFF) -> None:
        self._backoff = backoff
        #: Consecutive connect failures that brought new evidence (0: healthy).
        self.failures = 0
        #: Bumped at every recorded failure; a dispatch remembers the value it saw.
        self.generation = 0
        #: The endpoint may be dialled again from this time on.
        self.until = 0.0

    def available(self, now: float) -> bool:
        return now >= self.until

    def backing_off(self, now: float) -> bool:
        return now < self.until

    def on_connect_failure(self, generation: int, now: float, rng: UniformSource) -> None:
        """A connect attempted by a request dispatched at ``generation`` failed."""
        if generation == self.generation:
            self.failures += 1
        elif self.backing_off(now) or self.failures == 0:
            # Stale: the latest failure already took the endpoint out (or a newer success
            # proved it reachable since); this one says nothing new.
            return
        self.generation += 1
        self.until = now + self._backoff.delay(self.failures - 1, rng)

    def on_connected(self, generation: int) -> None:
        """A request dispatched at ``generation`` reached the endpoint (whatever the answer)."""
        if generation == self.generation:
            self.failures = 0
            self.until = 0.0
