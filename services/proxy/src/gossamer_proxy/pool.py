"""Keep-alive pool of idle upstream HTTP/1 connections, per endpoint.

Idle connections are reused most-recently-released first (LIFO keeps the warm ones warm and
lets the rest age out). A connection idle longer than ``idle_timeout`` is closed by
:meth:`Pool.sweep`, which the proxy's one-second housekeeping tick calls with ``now``; the
timeout is kept below common app keep-alive timeouts so that the proxy, not the app, closes
idle connections, which avoids the reuse race behind "connection closed before message
completed" 502s. A connection the server closes while idle removes itself at once.
"""

from __future__ import annotations

from typing import Protocol

from .config import Endpoint

__all__ = ["Pool", "Poolable"]


class Poolable(Protocol):
    idle_since: float
    endpoint: Endpoint

    def is_usable(self) -> bool: ...

    def close(self) -> None: ...


class Pool:
    __slots__ = ("_idle", "idle_timeout", "max_idle_per_endpoint")

    def __init__(self, *, idle_timeout: float, max_idle_per_endpoint: int) -> None:
        self.idle_timeout = idle_timeout
        self.max_idle_per_endpoint = max_idle_per_endpoint
        self._idle: dict[Endpoint, list[Poolable]] = {}

    def acquire(self, endpoint: Endpoint) -> Poolable | None:
        """An idle usable connection to ``endpoint``, or ``None`` (the caller connects)."""
        idle = self._idle.get(endpoint)
        while idle:
            conn = idle.pop()
            if conn.is_usable():
                return conn
            conn.close()
        return None

    def release(self, conn: Poolable, now: float) -> None:
        """Return a connection whose last exchange finished cleanly."""
        idle = self._idle.get(conn.endpoint)
        if idle is None:
            idle = self._idle[conn.endpoint] = []
        if len(idle) >= self.max_idle_per_endpoint or not conn.is_usable():
            conn.close()
            return
        conn.idle_since = now
        idle.append(conn)

    def discard(self, conn: Poolable) -> None:
        """Forget an idle connection that has closed on its own."""
        idle = self._idle.get(conn.endpoint)
        if idle is not None and conn in idle:
            idle.remove(conn)

    def sweep(self, now: float) -> int:
        """Close idle connections older than the idle timeout; returns how many."""
        closed = 0
        deadline = now - self.idle_timeout
        for endpoint in list(self._idle):
            idle = self._idle[endpoint]
            keep = [conn for conn in idle if conn.idle_since > deadline and conn.is_usable()]
            for conn in idle:
                if conn not in keep:
                    conn.close()
                    closed += 1
            if keep:
                self._idle[endpoint] = keep
            else:
                del self._idle[endpoint]
        return closed

    def close_all(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    def idle_count(self, endpoint: Endpoint | None = None) -> int:
        if endpoint is not None:
            return len(self._idle.get(endpoint, ()))
        return sum(len(v) for v in self._idle.values())
