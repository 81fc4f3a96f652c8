"""One balanced backend: a ``Get`` watch driving P2C peak-EWMA behind a fail-fast queue.

The sans-io cores decide (:class:`~gossamer_proxy.mesh.balancer.P2cBalancer` picks and
records outcomes, :class:`~gossamer_proxy.mesh.queue.FailFastQueue` admits, sheds and
fails fast); this module only drives them from asyncio:

* the endpoint set follows the shared :class:`~gossamer_proxy.mesh.watch_state.WatchState`
  of the authority's ``Get`` stream (which keeps the last known set while the control plane
  is away);
* a request that finds no available endpoint waits in the queue (at most ``capacity``,
  then 503 load-shed) for up to ``failfast_timeout`` (then 504 fail-fast), and is woken
  when endpoints arrive or an endpoint's backoff ends (its reconnect backoff after a failed
  connect, or its failure-accrual ejection): a timer on the loop fires at the balancer's
  :meth:`~gossamer_proxy.mesh.balancer.P2cBalancer.next_available_at`;
* every pick is finished with its outcome, feeding latency, the endpoint's reconnect
  backoff (a failed connect makes it pending for 100 ms..500 ms, see
  :mod:`~gossamer_proxy.mesh.reconnect`) and failure accrual of responses (Linkerd's
  consecutive-failures default: 7 failures, 1 s..60 s backoff with 0.5 jitter);
* a request re-dispatched after a failed connect passes its failed endpoints as ``avoid``,
  so the new pick goes elsewhere whenever another endpoint is available.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Collection

import structlog

from ..errors import ProxyError, ProxyErrorKind
from ..mesh.accrual import ConsecutiveFailures
from ..mesh.backoff import Backoff, UniformSource
from ..mesh.balancer import Dispatch, Outcome, P2cBalancer
from ..mesh.endpoints import Address, EndpointTable
from ..mesh.endpoints import Endpoint as MeshEndpoint
from ..mesh.queue import Admission, FailFastQueue, QueueUpdate
from ..mesh.reconnect import CONNECT_BACKOFF
from ..mesh.watch_state import WatchState

__all__ = ["Backend"]

_log = structlog.get_logger("gossamer.proxy.outbound")

Waiter = asyncio.Future[None]


class Backend:
    """The endpoints of one authority (``name:port``), balanced per request or connection."""

    def __init__(
        self,
        authority: str,
        state: WatchState[EndpointTable],
        *,
        rng: UniformSource | None = None,
        capacity: int = 100,
        failfast_timeout: float = 3.0,
        accrual: Callable[[], ConsecutiveFailures] = ConsecutiveFailures,
        connect_backoff: Backoff = CONNECT_BACKOFF,
    ) -> None:
        self.authority = authority
        self.state = state
        self.rng: UniformSource = rng if rng is not None else random.Random()  # noqa: S311
        self.balancer: P2cBalancer[Address, MeshEndpoint] = P2cBalancer(
            accrual=accrual, connect_backoff=connect_backoff
        )
        self.queue: FailFastQueue[Waiter] = FailFastQueue(
            capacity=capacity, failfast_timeout=failfast_timeout
        )
        self._loop = asyncio.get_running_loop()
        self._seen = -1
        self._timer: asyncio.TimerHandle | None = None
        self._sync(self._loop.time())
        self._watcher = asyncio.create_task(self._watch(), name=f"backend:{authority}")

    # -- endpoint set ------------------------------------------------------------------------

    def _sync(self, now: float) -> None:
        if self.state.version == self._seen:
            return
        self._seen = self.state.version
        update = self.balancer.update(dict(self.state.value.endpoints), now)
        if update.added or update.removed:
            _log.debug(
                "balancer_updated",
                authority=self.authority,
                added=[f"{ip}:{port}" for ip, port in update.added],
                removed=[f"{ip}:{port}" for ip, port in update.removed],
            )

    async def _watch(self) -> None:
        version = self.state.version
        while True:
            version = await self.state.wait_changed(version)
            self._wake()

    def counts(self) -> tuple[int, int]:
        """``(ready, pending)`` endpoints, for ``outbound_http_balancer_endpoints``."""
        now = self._loop.time()
        self._sync(now)
        return self.balancer.counts(now)

    # -- picking -----------------------------------------------------------------------------

    async def acquire(self, avoid: Collection[Address] = ()) -> Dispatch[Address, MeshEndpoint]:
        """Pick an endpoint, waiting in the queue while none is available.

        ``avoid``: endpoints to pass over while others are available (a re-dispatch after
        failed connects). Raises :class:`ProxyError` ``LOAD_SHED`` (queue full) or
        ``FAIL_FAST``.
        """
        loop = self._loop
        while True:
            now = loop.time()
            self._sync(now)
            dispatch = self.balancer.pick(now, self.rng, avoid=avoid)
            if dispatch is not None:
                self._apply(self.queue.set_ready(True, now))
                return dispatch
            self._apply(self.queue.set_ready(False, now))
            waiter: Waiter = loop.create_future()
            admission = self.queue.offer(waiter, now)
            if admission is Admission.LOAD_SHED:
                raise ProxyError(ProxyErrorKind.LOAD_SHED, f"{self.authority}: queue full")
            if admission is Admission.FAIL_FAST:
                raise ProxyError(
                    ProxyErrorKind.FAIL_FAST, f"{self.authority}: no endpoints available"
                )
            if admission is Admission.DISPATCH:
                continue
            self._arm()
            try:
                await waiter
            except asyncio.CancelledError:
                self.queue.withdraw(waiter)
                raise

    def finish(
        self,
        dispatch: Dispatch[Address, MeshEndpoint],
        outcome: Outcome,
        latency: float | None = None,
    ) -> None:
        now = self._loop.time()
        self.balancer.finish(dispatch, outcome, now, self.rng, latency=latency)
        if len(self.queue):
            # Any outcome can change who is available: a success or a failed response ends
            # a reconnect backoff, a failed connect or probe starts one (new wake-up time).
            self._wake()

    # -- waking the queue --------------------------------------------------------------------

    def _wake(self) -> None:
        if self._timer is not None:
            self._timer.cancel()  # re-armed below for the (possibly new) next deadline
            self._timer = None
        now = self._loop.time()
        self._sync(now)
        ready = self.balancer.counts(now)[0] > 0
        self._apply(self.queue.set_ready(ready, now))
        if len(self.queue):
            self._arm()

    def _apply(self, update: QueueUpdate[Waiter]) -> None:
        for waiter in update.dispatch:
            if not waiter.done():
                waiter.set_result(None)
        for waiter in update.failed:
            if not waiter.done():
                waiter.set_exception(
                    ProxyError(ProxyErrorKind.FAIL_FAST, f"{self.authority}: no endpoints")
                )

    def _arm(self) -> None:
        """Wake up at the fail-fast deadline or when an endpoint's backoff ends."""
        now = self._loop.time()
        candidates: list[float] = []
        comeback = self.balancer.next_available_at(now)
        if comeback is not None:
            candidates.append(comeback)
        failfast = self.queue.next_deadline()
        if failfast is not None:
            candidates.append(failfast)
        if not candidates:
            return
        when = min(candidates)
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._wake)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watcher
        for waiter in self.queue.set_ready(True, self._loop.time()).dispatch:
            if not waiter.done():
                waiter.set_exception(ProxyError(ProxyErrorKind.SHUTTING_DOWN))
