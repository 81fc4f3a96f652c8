"""Tapping the workers of a multi-core proxy, from the parent's ``Observe`` call.

Only the parent listens on the control port (4190), so a tap client's one mTLS connection,
authorized once, sees every process: the parent's :class:`~.server.TapService` runs its own
tap and asks the workers (through :class:`RemoteTaps`, which the multi-core supervisor
implements over each worker's private link) to run the same tap; their events come back over
those links into the call's :class:`RemoteTap`, and :class:`~.fanin.FanIn` merges them with
the parent's own, held to the call's limit.

The worker's side is :class:`~.relay.TapRelay`. No process waits for a tap: a worker's tap
queue drops what its link cannot take, each bounded by :data:`~.taps.QUEUE_CAPACITY` and
counted. The flow between them is held by credit: a worker sends only as many events as
the parent granted it (``window`` at the start, then again as the call's client takes
them), so a slow client leaves the events to be dropped in the workers, before they are
framed, sent and decoded, and the parent's loop, which serves traffic too, never decodes
events only to discard them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from google.protobuf.message import DecodeError
from gossamer_api.proxy import tap_pb2

from .taps import QUEUE_CAPACITY, Wake

__all__ = ["Grant", "RemoteTap", "RemoteTaps"]

#: ``grant(worker, events)``: let ``worker`` send that many more events of the call.
Grant = Callable[[int, int], None]


class RemoteTap:
    """The workers' part of one ``Observe`` call: their events, waiting to be sent."""

    __slots__ = (
        "_credit",
        "_epoch",
        "_grant",
        "_owed",
        "capacity",
        "dropped",
        "limited",
        "pending",
        "queue",
        "request",
        "starting",
        "tap_id",
        "wake",
        "window",
    )

    def __init__(
        self,
        tap_id: int,
        request: bytes,
        wake: Wake,
        *,
        capacity: int = QUEUE_CAPACITY,
        window: int | None = None,
        grant: Grant | None = None,
    ) -> None:
        self.tap_id = tap_id
        #: The call's ``ObserveRequest``, serialized, as each worker gets it.
        self.request = request
        self.wake = wake
        self.capacity = capacity
        #: Events each worker may send before it is granted more (its first credit); the
        #: windows of all workers together fit in ``capacity``.
        self.window = max(1, capacity if window is None else window)
        self._grant = grant
        #: Waiting events: (worker, the worker's tap epoch, serialized ``TapEvent``).
        self.queue: deque[tuple[int, int, bytes]] = deque()
        self.dropped = 0
        #: Workers whose tap for this call has not finished.
        self.pending: set[int] = set()
        #: Workers asked to start the tap that have not yet said it runs.
        self.starting: set[int] = set()
        #: The call's limit is reached: workers that start now need not tap.
        self.limited = False
        #: Events each tapping worker may still send.
        self._credit: dict[int, int] = {}
        #: Events of each worker taken since its last grant.
        self._owed: dict[int, int] = {}
        #: Each worker's tap, counted: a restarted worker's tap is a new one.
        self._epoch: dict[int, int] = {}

    @property
    def done(self) -> bool:
        """Every worker's tap finished and every event it sent was taken."""
        return not self.pending and not self.queue

    @property
    def tapping(self) -> bool:
        """Every worker asked has started its tap (or finished it)."""
        return not self.starting

    def asked(self, worker: int) -> None:
        """``worker`` was asked to start the tap, with :attr:`window` events of credit."""
        self.pending.add(worker)
        self.starting.add(worker)
        self._epoch[worker] = self._epoch.get(worker, 0) + 1
        self._credit[worker] = self.window
        self._owed[worker] = 0

    def started(self, worker: int) -> None:
        """``worker``'s tap runs: requests it serves from now on are tapped."""
        if worker in self.starting:
            self.starting.discard(worker)
            self.wake()

    def room(self, worker: int) -> int:
        """How many events ``worker`` may send now (more were sent against no credit)."""
        return self._credit.get(worker, 0) if worker in self.pending else 0

    def offer(self, worker: int, events: Iterable[bytes]) -> None:
        """Events of ``worker``'s tap (serialized ``TapEvent``s); beyond its credit, dropped."""
        if worker not in self.pending:
            return  # finished, or never started here: late events of a closed tap
        epoch = self._epoch[worker]
        for event in events:
            if self._credit[worker] <= 0:
                self.dropped += 1  # sent against no credit
            elif len(self.queue) >= self.capacity:
                self.dropped += 1
                self._credit[worker] -= 1
                self._taken(worker, epoch)  # its credit goes back
            else:
                self._credit[worker] -= 1
                self.queue.append((worker, epoch, event))
        self.wake()

    def _taken(self, worker: int, epoch: int) -> None:
        """One of ``worker``'s events left the queue: grant credit back, a few at a time."""
        if worker not in self.pending or self._epoch.get(worker) != epoch:
            return  # a finished tap, or the worker's previous one: it sends no more
        owed = self._owed[worker] + 1
        if owed < max(1, self.window // 4):
            self._owed[worker] = owed
            return
        self._owed[worker] = 0
        self._credit[worker] += owed
        if self._grant is not None:
            self._grant(worker, owed)

    def finished(self, worker: int, dropped: int = 0) -> None:
        """``worker``'s tap ended (limit used up, stopped, or the worker exited)."""
        self.starting.discard(worker)
        self._credit.pop(worker, None)
        self._owed.pop(worker, None)
        if worker in self.pending:
            self.pending.discard(worker)
            self.dropped += max(dropped, 0)
        self.wake()

    def next_event(self) -> tap_pb2.TapEvent | None:
        found = self.next_with_bytes()
        return None if found is None else found[0]

    def next_with_bytes(self) -> tuple[tap_pb2.TapEvent, bytes] | None:
        """The next event, parsed (to be judged) and as received (to be sent as it is)."""
        while self.queue:
            worker, epoch, data = self.queue.popleft()
            self._taken(worker, epoch)
            try:
                return tap_pb2.TapEvent.FromString(data), data
            except DecodeError:
                self.dropped += 1  # not from our worker's serializer: never forwarded
        return None


class RemoteTaps(Protocol):
    """What the parent's tap service asks of the workers (the multi-core supervisor)."""

    def open(self, request: tap_pb2.ObserveRequest, wake: Wake) -> RemoteTap:
        """Start ``request``'s tap on every serving worker (and on workers ready later)."""
        ...

    def limit(self, remote: RemoteTap) -> None:
        """The call's limit is reached: the workers take no more requests for it."""
        ...

    def close(self, remote: RemoteTap) -> None:
        """The call ended: the workers stop its tap."""
        ...
