"""Tapping the workers of a multi-core proxy, from the parent's ``Observe`` call.

Only the parent listens on the control port (4190), so a tap client's one mTLS connection,
authorized once, sees every process: the parent's :class:`~.server.TapService` runs its own
tap and asks the workers (through :class:`RemoteTaps`, which the multi-core supervisor
implements over each worker's private link) to run the same tap; their events come back over
those links into the call's :class:`RemoteTap`, and :class:`~.fanin.FanIn` merges them with
the parent's own, held to the call's limit.

The worker's side is :class:`~.relay.TapRelay`. No process waits for a tap: a worker's tap
queue drops what its link cannot take, and :class:`RemoteTap` drops what the call's client
cannot take, each bounded by :data:`~.taps.QUEUE_CAPACITY` and counted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Protocol

from google.protobuf.message import DecodeError
from gossamer_api.proxy import tap_pb2

from .taps import QUEUE_CAPACITY, Wake

__all__ = ["RemoteTap", "RemoteTaps"]


class RemoteTap:
    """The workers' part of one ``Observe`` call: their events, waiting to be sent."""

    __slots__ = (
        "capacity",
        "dropped",
        "limited",
        "pending",
        "queue",
        "request",
        "starting",
        "tap_id",
        "wake",
    )

    def __init__(
        self,
        tap_id: int,
        request: bytes,
        wake: Wake,
        *,
        capacity: int = QUEUE_CAPACITY,
    ) -> None:
        self.tap_id = tap_id
        #: The call's ``ObserveRequest``, serialized, as each worker gets it.
        self.request = request
        self.wake = wake
        self.capacity = capacity
        self.queue: deque[bytes] = deque()
        self.dropped = 0
        #: Workers whose tap for this call has not finished.
        self.pending: set[int] = set()
        #: Workers asked to start the tap that have not yet said it runs.
        self.starting: set[int] = set()
        #: The call's limit is reached: workers that start now need not tap.
        self.limited = False

    @property
    def done(self) -> bool:
        """Every worker's tap finished and every event it sent was taken."""
        return not self.pending and not self.queue

    @property
    def tapping(self) -> bool:
        """Every worker asked has started its tap (or finished it)."""
        return not self.starting

    def asked(self, worker: int) -> None:
        """``worker`` was asked to start the tap."""
        self.pending.add(worker)
        self.starting.add(worker)

    def started(self, worker: int) -> None:
        """``worker``'s tap runs: requests it serves from now on are tapped."""
        if worker in self.starting:
            self.starting.discard(worker)
            self.wake()

    def offer(self, worker: int, events: Iterable[bytes]) -> None:
        """Events of ``worker``'s tap (serialized ``TapEvent``s); beyond capacity, dropped."""
        if worker not in self.pending:
            return  # finished, or never started here: late events of a closed tap
        for event in events:
            if len(self.queue) >= self.capacity:
                self.dropped += 1
            else:
                self.queue.append(event)
        self.wake()

    def finished(self, worker: int, dropped: int = 0) -> None:
        """``worker``'s tap ended (limit used up, stopped, or the worker exited)."""
        self.starting.discard(worker)
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
            data = self.queue.popleft()
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
