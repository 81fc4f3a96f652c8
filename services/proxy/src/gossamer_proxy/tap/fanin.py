"""One ``Observe`` call's events from several processes, held to the call's limit (sans-io).

On a multi-core proxy each serving process runs its own tap for the call, each with the
call's whole ``limit``, since no process knows what the others take. The parent merges their
events into the one stream and keeps the limit here: it passes the first ``limit``
``RequestInit``s and the later events of those requests, and nothing of any request taken
past the limit (a process may take a few before it hears that the limit is reached).

Only requests passed and not yet ended are remembered, and at most ``max_open`` of them (the
oldest is forgotten first): a request whose ``ResponseEnd`` a full queue dropped cannot grow
this without bound. A forgotten request's later events pass while the limit is not yet
reached, and are held back after it.
"""

from __future__ import annotations

from typing import Final

from gossamer_api.proxy import tap_pb2

__all__ = ["MAX_OPEN", "FanIn"]

#: Requests passed and not yet ended that one call remembers.
MAX_OPEN: Final = 8192


class FanIn:
    __slots__ = ("_open", "limit", "max_open", "taken")

    def __init__(self, limit: int, *, max_open: int = MAX_OPEN) -> None:
        self.limit = limit
        self.max_open = max_open
        self.taken = 0
        self._open: dict[tuple[int, int, int], None] = {}

    @property
    def full(self) -> bool:
        """The limit is reached: the processes should take no more requests."""
        return self.taken >= self.limit

    def admit(self, event: tap_pb2.TapEvent) -> bool:
        """Whether ``event`` goes out on the call's stream."""
        http = event.http
        kind = http.WhichOneof("event")
        if kind == "request_init":
            if self.taken >= self.limit:
                return False
            self.taken += 1
            ident = http.request_init.id
            key = (event.proxy_direction, ident.base, ident.stream)
            if len(self._open) >= self.max_open:
                del self._open[next(iter(self._open))]
            self._open[key] = None
            return True
        if kind == "response_init":
            ident = http.response_init.id
        elif kind == "response_end":
            ident = http.response_end.id
        else:
            return False  # no HTTP event: nothing a tap sends
        key = (event.proxy_direction, ident.base, ident.stream)
        known = key in self._open
        if kind == "response_end" and known:
            del self._open[key]
        return known or self.taken < self.limit
