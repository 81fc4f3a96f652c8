"""Power-of-two-choices over peak-EWMA load, Linkerd's endpoint balancer (sans-io).

For every request (HTTP) or connection (opaque TCP) the balancer draws two distinct endpoints
at random among those that can take traffic and sends to the one with the lower
:meth:`~gossamer_proxy.mesh.ewma.PeakEwma.cost` (linkerd-wire.md §9 outbound step 4;
``WeightedAddr.weight`` plays no part). An endpoint can take traffic when it is *ready* (the
data path may mark endpoints pending, e.g. while a connection is being established), it is
not in a reconnect backoff after a failed connect (:mod:`.reconnect`) and its failure
accrual lets it (:mod:`.accrual`). When none can, :meth:`P2cBalancer.pick` returns ``None``
and the caller queues the request (failfast after 3 s, see :mod:`.queue`), waking it at
:meth:`P2cBalancer.next_available_at` at the latest.

Endpoints are keyed by address. :meth:`P2cBalancer.update` replaces the endpoint set from
discovery: survivors keep their latency estimate, in-flight count and accrual state, new
ones start from ``default_rtt``. Reconnect backoff and failure accrual are two separate
judges: the first is always on and looks only at whether a connection could be made; the
second is opt-in and counts failed responses. A failed connect goes to the first only: in
Linkerd a request is never dispatched to an endpoint without a connection, so connect
errors make endpoints pending and never count as failed responses. (Counting them would
also eject an endpoint for 1 s..60 s after a few connect timeouts, e.g. while neighbours
still hold a stale ARP entry for a recycled pod IP.)
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from gossamer_proxy.mesh.accrual import AccrualState, ConsecutiveFailures
from gossamer_proxy.mesh.backoff import Backoff, UniformSource
from gossamer_proxy.mesh.ewma import DEFAULT_DECAY, DEFAULT_RTT, PeakEwma
from gossamer_proxy.mesh.reconnect import CONNECT_BACKOFF, ReconnectBackoff

__all__ = ["BalancerUpdate", "Dispatch", "EndpointSlot", "Outcome", "P2cBalancer"]

K = TypeVar("K", bound=Hashable)
M = TypeVar("M")


class Outcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    """Failed response class, transport error or timeout: counts towards accrual."""
    CONNECT_FAILURE = "connect_failure"
    """No connection could be made: no byte was sent. Starts the endpoint's reconnect
    backoff; failure accrual, which judges responses, sees no verdict (as for CANCELLED)."""
    CANCELLED = "cancelled"
    """Ended without a verdict (caller went away); no latency sample, no accrual change."""


@dataclass(slots=True, eq=False)
class EndpointSlot(Generic[K, M]):
    """One endpoint's balancing state; ``meta`` is whatever discovery said about it."""

    key: K
    meta: M
    load: PeakEwma
    accrual: ConsecutiveFailures
    reconnect: ReconnectBackoff
    ready: bool = True
    removed: bool = False

    def available(self, now: float) -> bool:
        return (
            self.ready
            and not self.removed
            and self.reconnect.available(now)
            and self.accrual.available(now)
        )

    def available_at(self, now: float) -> float | None:
        """When this endpoint will be available if nothing else happens (``None``: unknown).

        Unknown when only an event can make it available: marked ready by the data path, or
        its accrual probe finishing.
        """
        if not self.ready or self.removed or self.accrual.state is AccrualState.PROBING:
            return None
        at = max(now, self.reconnect.until)
        if self.accrual.state is AccrualState.EJECTED:
            at = max(at, self.accrual.reopen_at)
        return at


@dataclass(frozen=True, slots=True)
class Dispatch(Generic[K, M]):
    """A pick that is in flight; hand it back to :meth:`P2cBalancer.finish`."""

    slot: EndpointSlot[K, M]
    started: float
    probe: bool
    generation: int = 0
    """The endpoint's reconnect generation at pick time (see :mod:`.reconnect`)."""

    @property
    def key(self) -> K:
        return self.slot.key

    @property
    def meta(self) -> M:
        return self.slot.meta


@dataclass(frozen=True, slots=True)
class BalancerUpdate(Generic[K]):
    added: tuple[K, ...] = ()
    removed: tuple[K, ...] = ()
    changed: tuple[K, ...] = ()


def _default_accrual() -> ConsecutiveFailures:
    # Accrual is opt-in per backend (FailureAccrual in the outbound policy); 0 disables.
    return ConsecutiveFailures(max_failures=0)


class P2cBalancer(Generic[K, M]):
    """P2C over peak-EWMA for one backend's endpoints."""

    def __init__(
        self,
        *,
        default_rtt: float = DEFAULT_RTT,
        decay: float = DEFAULT_DECAY,
        accrual: Callable[[], ConsecutiveFailures] = _default_accrual,
        connect_backoff: Backoff = CONNECT_BACKOFF,
        initially_ready: bool = True,
    ) -> None:
        self._default_rtt = default_rtt
        self._decay = decay
        self._accrual = accrual
        self._connect_backoff = connect_backoff
        self._initially_ready = initially_ready
        self._slots: dict[K, EndpointSlot[K, M]] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: object) -> bool:
        return key in self._slots

    def slot(self, key: K) -> EndpointSlot[K, M]:
        return self._slots[key]

    def slots(self) -> list[EndpointSlot[K, M]]:
        return list(self._slots.values())

    def update(self, endpoints: Mapping[K, M], now: float) -> BalancerUpdate[K]:
        """Make the endpoint set equal ``endpoints``, keeping state for survivors."""
        removed = tuple(k for k in self._slots if k not in endpoints)
        for key in removed:
            self._slots.pop(key).removed = True
        added: list[K] = []
        changed: list[K] = []
        for key, meta in endpoints.items():
            slot = self._slots.get(key)
            if slot is None:
                self._slots[key] = EndpointSlot(
                    key=key,
                    meta=meta,
                    load=PeakEwma(now, default_rtt=self._default_rtt, decay=self._decay),
                    accrual=self._accrual(),
                    reconnect=ReconnectBackoff(self._connect_backoff),
                    ready=self._initially_ready,
                )
                added.append(key)
            elif slot.meta != meta:
                slot.meta = meta
                changed.append(key)
        return BalancerUpdate(added=tuple(added), removed=removed, changed=tuple(changed))

    def set_ready(self, key: K, ready: bool) -> None:
        """Mark an endpoint ready or pending (unknown keys are ignored: it was removed)."""
        slot = self._slots.get(key)
        if slot is not None:
            slot.ready = ready

    def counts(self, now: float) -> tuple[int, int]:
        """``(ready, pending)`` as in ``outbound_http_balancer_endpoints{endpoint_state}``."""
        ready = sum(1 for s in self._slots.values() if s.available(now))
        return ready, len(self._slots) - ready

    def next_available_at(self, now: float) -> float | None:
        """The earliest time after ``now`` at which an unavailable endpoint comes back.

        ``None`` when no endpoint is waiting for a time (all available, or waiting for an
        event). A caller with queued requests re-checks at this time (a timer), since
        nothing else announces the end of a backoff.
        """
        times = [t for s in self._slots.values() if (t := s.available_at(now)) is not None]
        later = [t for t in times if t > now]
        return min(later) if later else None

    def ejected(self) -> list[K]:
        return [k for k, s in self._slots.items() if s.accrual.state is not AccrualState.AVAILABLE]

    def pick(
        self, now: float, rng: UniformSource, *, avoid: Collection[K] = ()
    ) -> Dispatch[K, M] | None:
        """Choose an endpoint for one request/connection, or ``None`` if none can take it.

        ``avoid``: endpoints this request already failed to connect to; they are passed over
        while another endpoint can take the request (a re-dispatch after a failed connect).
        """
        candidates = [s for s in self._slots.values() if s.available(now)]
        if not candidates:
            return None
        if avoid:
            others = [s for s in candidates if s.key not in avoid]
            if others:
                candidates = others
        if len(candidates) == 1:
            chosen = candidates[0]
        else:
            count = len(candidates)
            first = min(int(rng.random() * count), count - 1)
            second = min(int(rng.random() * (count - 1)), count - 2)
            if second >= first:
                second += 1
            a, b = candidates[first], candidates[second]
            chosen = b if b.load.cost(now) < a.load.cost(now) else a
        probe = chosen.accrual.on_dispatch(now)
        chosen.load.start()
        return Dispatch(
            slot=chosen, started=now, probe=probe, generation=chosen.reconnect.generation
        )

    def finish(
        self,
        dispatch: Dispatch[K, M],
        outcome: Outcome,
        now: float,
        rng: UniformSource,
        *,
        latency: float | None = None,
    ) -> None:
        """Record how a dispatched request or connection ended.

        The latency sample is ``now - started`` (HTTP: the response time) unless ``latency``
        is given (opaque TCP passes its connect time, since a connection's lifetime says
        nothing about the endpoint's speed). ``CONNECT_FAILURE`` takes the endpoint out for
        its reconnect backoff; any outcome that proves a connection was made (``SUCCESS``,
        or ``FAILURE``, a failed response) ends it.
        """
        slot = dispatch.slot
        if outcome is Outcome.CANCELLED:
            slot.load.cancel()
            slot.accrual.on_cancel(now, probe=dispatch.probe)
            return
        sample = max(0.0, now - dispatch.started) if latency is None else latency
        slot.load.finish(sample, now)
        if outcome is Outcome.CONNECT_FAILURE:
            slot.reconnect.on_connect_failure(dispatch.generation, now, rng)
            slot.accrual.on_cancel(now, probe=dispatch.probe)
            return
        slot.reconnect.on_connected(dispatch.generation)
        if outcome is Outcome.SUCCESS:
            slot.accrual.on_success(probe=dispatch.probe, now=now)
        else:
            slot.accrual.on_failure(now, rng, probe=dispatch.probe)
