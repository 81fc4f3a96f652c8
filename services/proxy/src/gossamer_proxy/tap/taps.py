"""Active taps, and the request observer that feeds them (sans-io apart from a wake-up call).

A :class:`Tap` is one ``Observe`` call: its compiled match, whether it extracts headers, how
many more requests it may take (``limit``) and a bounded queue of events waiting to be sent.
The data path never waits for a tap: when a tap's queue is full (its client reads slowly)
new events for it are dropped and counted, never buffered beyond :data:`QUEUE_CAPACITY`.

:class:`Taps` registers its :class:`TapObserver` on the proxy's
:class:`~gossamer_proxy.observe.ObserverHub` when the first tap starts and removes it when
the last one stops or has used up its limit (requests already taken still get their
events), so with nobody tapping the request path pays only the listener's
``observers is None`` check.

A request is matched when its destination is known: when it is forwarded (outbound, the
endpoint has been picked), or when the proxy answers it itself. Taps whose match accepts
it, and whose limit is not used up, take it: each then gets ``RequestInit``,
``ResponseInit`` and ``ResponseEnd`` for it. A tap is done once its limit is used up and
every request it took has ended.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

from gossamer_api.proxy import tap_pb2

from ..observe import ObservedRequest, ObserverHub, RequestObserver
from .events import EventBuilder
from .match import Matcher

__all__ = [
    "MAX_TAPS",
    "QUEUE_CAPACITY",
    "Tap",
    "TapObserver",
    "Taps",
    "TooManyTapsError",
    "Wake",
]

#: Events one tap may hold unsent; beyond it, new events are dropped.
QUEUE_CAPACITY: Final = 1024
#: Concurrent ``Observe`` calls one proxy serves.
MAX_TAPS: Final = 32

Wake = Callable[[], None]


class TooManyTapsError(RuntimeError):
    """:data:`MAX_TAPS` taps are active already."""


class Tap:
    """One ``Observe`` call's state."""

    __slots__ = (
        "builder",
        "capacity",
        "dropped",
        "exhausted",
        "in_flight",
        "matcher",
        "queue",
        "remaining",
        "wake",
    )

    def __init__(
        self,
        matcher: Matcher,
        *,
        limit: int,
        headers: bool,
        wake: Wake,
        capacity: int = QUEUE_CAPACITY,
    ) -> None:
        self.matcher = matcher
        self.remaining = limit
        self.builder = EventBuilder(headers=headers)
        self.queue: deque[tap_pb2.TapEvent] = deque()
        self.capacity = capacity
        self.dropped = 0
        self.in_flight = 0
        self.wake = wake
        #: Called once the limit is used up (the registry may stop observing).
        self.exhausted: Callable[[], None] | None = None

    @property
    def done(self) -> bool:
        """The limit is used up and every request taken has ended."""
        return self.remaining <= 0 and self.in_flight == 0

    def take(self, request: ObservedRequest) -> bool:
        """Whether this tap takes ``request`` (counting it against the limit)."""
        if self.remaining <= 0 or not self.matcher.matches(request):
            return False
        self.remaining -= 1
        self.in_flight += 1
        if self.remaining == 0 and self.exhausted is not None:
            self.exhausted()
        return True

    def offer(self, event: tap_pb2.TapEvent) -> None:
        if len(self.queue) >= self.capacity:
            self.dropped += 1
            return
        self.queue.append(event)
        self.wake()

    def ended(self) -> None:
        self.in_flight -= 1
        if self.done:
            self.wake()

    def next_event(self) -> tap_pb2.TapEvent | None:
        return self.queue.popleft() if self.queue else None


class _Taken:
    """Per request: the taps that took it (decided once, when its destination is known)."""

    __slots__ = ("base", "decided", "taps")

    def __init__(self) -> None:
        self.decided = False
        self.taps: tuple[Tap, ...] = ()
        self.base: tap_pb2.TapEvent | None = None


class TapObserver(RequestObserver):
    def __init__(self, taps: Taps) -> None:
        self._taps = taps

    def on_request(self, request: ObservedRequest) -> object | None:
        return _Taken() if self._taps.active else None

    def _decide(self, request: ObservedRequest, taken: _Taken) -> None:
        taken.decided = True
        taken.taps = tuple(tap for tap in self._taps.active if tap.take(request))
        if not taken.taps:
            return
        base = taken.base = EventBuilder.base(request)
        for tap in taken.taps:
            tap.offer(tap.builder.request_init(request, base))

    def on_forwarded(self, request: ObservedRequest, token: object) -> None:
        if isinstance(token, _Taken) and not token.decided:
            self._decide(request, token)

    def on_response(self, request: ObservedRequest, token: object) -> None:
        if not isinstance(token, _Taken):
            return
        if not token.decided:
            self._decide(request, token)  # answered by the proxy, never forwarded
        base = token.base
        if base is None:
            return
        for tap in token.taps:
            tap.offer(tap.builder.response_init(request, base))

    def on_end(self, request: ObservedRequest, token: object) -> None:
        if not isinstance(token, _Taken):
            return
        taps, token.taps = token.taps, ()
        base = token.base
        for tap in taps:
            if base is not None:
                tap.offer(tap.builder.response_end(request, base))
            tap.ended()


class Taps:
    """The proxy's active taps; observes requests only while there is one."""

    def __init__(self, hub: ObserverHub, *, max_taps: int = MAX_TAPS) -> None:
        self._hub = hub
        self._max = max_taps
        self.active: list[Tap] = []
        self._observer = TapObserver(self)
        self._observing = False

    def start(
        self,
        matcher: Matcher,
        *,
        limit: int,
        headers: bool,
        wake: Wake,
        capacity: int = QUEUE_CAPACITY,
    ) -> Tap:
        if len(self.active) >= self._max:
            raise TooManyTapsError(f"{self._max} taps are active on this proxy")
        tap = Tap(matcher, limit=limit, headers=headers, wake=wake, capacity=capacity)
        tap.exhausted = self._refresh
        self.active.append(tap)
        self._refresh()
        return tap

    def exhaust(self, tap: Tap) -> None:
        """Take no more requests for ``tap`` (a limit kept elsewhere is reached); the ones
        it took still get their events."""
        if tap.remaining > 0:
            tap.remaining = 0
            self._refresh()
            tap.wake()

    def stop(self, tap: Tap) -> None:
        if tap not in self.active:
            return
        self.active.remove(tap)
        tap.remaining = 0
        self._refresh()

    def _refresh(self) -> None:
        """Observe requests exactly while some tap may still take one."""
        wanted = any(tap.remaining > 0 for tap in self.active)
        if wanted and not self._observing:
            self._hub.add(self._observer, ("inbound", "outbound"))
        elif not wanted and self._observing:
            self._hub.remove(self._observer)
        self._observing = wanted
