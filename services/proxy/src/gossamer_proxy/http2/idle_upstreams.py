"""Idle HTTP/2 upstream connections kept for the listener's next client connection.

On the single-upstream path (inbound, and outbound to a fixed target) every client
connection has its own upstream connection, which closed with it. A gRPC client that
reconnects, or a load balancer that opens connections by the dozen, then cost a new
upstream connection each: toward a peer proxy that is a TCP connect and an mTLS handshake
on both sides, toward the app a connect and the HTTP/2 preface exchange. Here a client
connection that closes hands its upstream connection, once no stream is left on it, to
this listener-wide store instead, and the next client connection to the same endpoint,
with the same metric labels, takes it up.

An upstream connection still serves one client connection at a time, so per-stream flow
control and a client's failures stay as contained as before; only the connection outlives
its first owner. What is kept is bounded per key, expires after the pool's idle timeouts
(the longer mesh one toward peer proxies, as :mod:`..pool` explains) from the proxy's
housekeeping tick, and is closed at shutdown.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from ..config import Endpoint
from ..metrics import TargetLabels

__all__ = ["IdleKey", "IdleUpstreams", "Reusable"]

#: Where an upstream connection goes and the labels its streams and bytes are counted under.
IdleKey = tuple[Endpoint, TargetLabels]

#: Idle connections kept per key: enough for a client's burst of reconnects.
MAX_IDLE_PER_KEY = 256


class Reusable(Protocol):
    """What the store needs of an upstream connection."""

    def reusable(self) -> bool:
        """Open, no GOAWAY either way, no stream, nothing backed up."""
        ...

    def close_when_idle(self) -> None: ...


R = TypeVar("R", bound=Reusable)


class IdleUpstreams(Generic[R]):
    """Upstream connections no client connection uses, by key, most recently kept first."""

    __slots__ = ("_idle", "max_per_key")

    def __init__(self, max_per_key: int = MAX_IDLE_PER_KEY) -> None:
        if max_per_key < 0:
            raise ValueError(f"max_per_key must not be negative, not {max_per_key}")
        self.max_per_key = max_per_key
        #: Per key: ``(conn, idle since, idle timeout)``, the most recently kept last.
        self._idle: dict[IdleKey, list[tuple[R, float, float]]] = {}

    def take(self, key: IdleKey) -> R | None:
        """A reusable idle connection for ``key`` (the caller now owns it), or ``None``."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()[0]
            if conn.reusable():
                if not idle:
                    del self._idle[key]
                return conn
            conn.close_when_idle()
        self._idle.pop(key, None)
        return None

    def keep(self, key: IdleKey, conn: R, now: float, timeout: float) -> bool:
        """Keep ``conn`` for ``timeout`` seconds from ``now``; ``False``: not kept (the
        caller closes it), because it cannot be reused or the key has all it may keep."""
        if timeout <= 0 or not conn.reusable():
            return False
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self.max_per_key:
            if not idle:
                del self._idle[key]
            return False
        idle.append((conn, now, timeout))
        return True

    def sweep(self, now: float) -> int:
        """Close what has idled past its timeout or closed meanwhile; returns how many."""
        closed = 0
        for key in list(self._idle):
            keep: list[tuple[R, float, float]] = []
            for entry in self._idle[key]:
                conn, since, timeout = entry
                if now - since < timeout and conn.reusable():
                    keep.append(entry)
                else:
                    conn.close_when_idle()
                    closed += 1
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        return closed

    def close_all(self) -> None:
        idle, self._idle = self._idle, {}
        for entries in idle.values():
            for conn, _, _ in entries:
                conn.close_when_idle()

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._idle.values())
