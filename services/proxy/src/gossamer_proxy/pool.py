"""Keep-alive pool of idle upstream HTTP/1 connections, per endpoint.

Idle connections are reused most-recently-released first (LIFO keeps the warm ones warm and
lets the rest age out). A connection idle longer than ``idle_timeout`` is closed by
:meth:`Pool.sweep`, which the proxy's one-second housekeeping tick calls with ``now``; the
timeout is kept below common app keep-alive timeouts so that the proxy, not the app, closes
idle connections, which avoids the reuse race behind "connection closed before message
completed" 502s. A connection the server closes while idle removes itself at once.

Mesh connections (mTLS to a peer proxy's inbound port) are the exception: their server is
another Gossamer/Linkerd proxy, which keeps an idle client connection for its client idle
timeout (90 s by default), so the app keep-alive race does not apply to them, and each one
costs a TLS handshake (both sides sign and verify) to replace. They are kept for
``mesh_idle_timeout`` instead, below the peer's, so a lull of a few seconds does not make
the next burst queue behind a wave of handshakes on a busy core.
"""

from __future__ import annotations

from typing import Protocol

from .config import Endpoint

__all__ = ["MESH_IDLE_TIMEOUT", "Pool", "Poolable"]


#: How long an idle mesh (mTLS, proxy-to-proxy) connection is kept: under the peer proxy's
#: default client idle timeout (90 s) so that the peer never closes one we are about to reuse.
MESH_IDLE_TIMEOUT = 60.0


class Poolable(Protocol):
    idle_since: float
    endpoint: Endpoint
    #: The server is a peer proxy reached over mesh mTLS (kept for ``mesh_idle_timeout``).
    meshed: bool

    def is_usable(self) -> bool: ...

    def close(self) -> None: ...


class Pool:
    __slots__ = ("_idle", "idle_timeout", "max_idle_per_endpoint", "mesh_idle_timeout")

    def __init__(
        self,
        *,
        idle_timeout: float,
        max_idle_per_endpoint: int,
        mesh_idle_timeout: float = MESH_IDLE_TIMEOUT,
    ) -> None:
        self.idle_timeout = idle_timeout
        #: Never shorter than ``idle_timeout``: an operator's longer setting still applies.
        self.mesh_idle_timeout = max(mesh_idle_timeout, idle_timeout)
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
        """Close idle connections older than their idle timeout; returns how many."""
        closed = 0
        deadline = now - self.idle_timeout
        mesh_deadline = now - self.mesh_idle_timeout
        for endpoint in list(self._idle):
            idle = self._idle[endpoint]
            keep = [
                conn
                for conn in idle
                if conn.idle_since > (mesh_deadline if conn.meshed else deadline)
                and conn.is_usable()
            ]
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
