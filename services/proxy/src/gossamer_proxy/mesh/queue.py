"""The balancer's request queue with load shedding and fail-fast (sans-io).

Linkerd puts a bounded queue in front of every balancer (``Queue {capacity 100,
failfast_timeout 3s}``; linkerd-wire.md §1.8, §9 outbound step 4, §10):

* while the balancer has a ready endpoint, requests pass straight through;
* while it has none, requests wait in the queue; a request arriving at a full queue is
  shed at once (**503**, gRPC ``UNAVAILABLE``);
* if no endpoint becomes ready within ``failfast_timeout``, the queue enters *fail-fast*:
  everything waiting fails with **504** (gRPC ``DEADLINE_EXCEEDED``) and new requests fail
  immediately, until an endpoint is ready again.

:class:`FailFastQueue` holds the waiting items and returns decisions; the caller performs
them (dispatch, or answer with the synthesized error) and calls :meth:`poll` at
:meth:`next_deadline`.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Admission", "FailFastQueue", "QueueState", "QueueUpdate"]

T = TypeVar("T")


class QueueState(enum.Enum):
    READY = "ready"
    WAITING = "waiting"
    FAILFAST = "failfast"


class Admission(enum.Enum):
    DISPATCH = "dispatch"
    """Send it now."""
    QUEUED = "queued"
    """Wait for an endpoint."""
    LOAD_SHED = "load_shed"
    """Queue full: answer 503."""
    FAIL_FAST = "fail_fast"
    """No endpoint for too long: answer 504."""


@dataclass(frozen=True, slots=True)
class QueueUpdate(Generic[T]):
    dispatch: tuple[T, ...] = ()
    """Items to send now (an endpoint became ready)."""
    failed: tuple[T, ...] = ()
    """Items to answer with 504 (the queue entered fail-fast)."""


class FailFastQueue(Generic[T]):
    def __init__(self, *, capacity: int = 100, failfast_timeout: float = 3.0) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must not be negative, got {capacity}")
        if failfast_timeout < 0:
            raise ValueError(f"failfast_timeout must not be negative, got {failfast_timeout}")
        self.capacity = capacity
        self.failfast_timeout = failfast_timeout
        self.state = QueueState.READY
        self._since = 0.0
        self._waiting: deque[T] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def set_ready(self, ready: bool, now: float) -> QueueUpdate[T]:
        """Tell the queue whether the balancer can take a request now."""
        if ready:
            self.state = QueueState.READY
            drained = tuple(self._waiting)
            self._waiting.clear()
            return QueueUpdate(dispatch=drained)
        if self.state is QueueState.READY:
            self.state = QueueState.WAITING
            self._since = now
        return self.poll(now)

    def offer(self, item: T, now: float) -> Admission:
        self.poll(now)
        if self.state is QueueState.READY:
            return Admission.DISPATCH
        if self.state is QueueState.FAILFAST:
            return Admission.FAIL_FAST
        if len(self._waiting) >= self.capacity:
            return Admission.LOAD_SHED
        self._waiting.append(item)
        return Admission.QUEUED

    def withdraw(self, item: T) -> bool:
        """Remove a waiting item whose client went away."""
        try:
            self._waiting.remove(item)
        except ValueError:
            return False
        return True

    def next_deadline(self) -> float | None:
        if self.state is QueueState.WAITING:
            return self._since + self.failfast_timeout
        return None

    def poll(self, now: float) -> QueueUpdate[T]:
        """Enter fail-fast if the balancer has been unready for ``failfast_timeout``."""
        if self.state is QueueState.WAITING and now - self._since >= self.failfast_timeout:
            self.state = QueueState.FAILFAST
            failed = tuple(self._waiting)
            self._waiting.clear()
            return QueueUpdate(failed=failed)
        return QueueUpdate()
