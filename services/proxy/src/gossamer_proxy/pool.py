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

New mesh connections are also rationed. A burst of requests toward one peer proxy (64 new
client connections at once, say) would otherwise start one TLS handshake each, all on the
same event loop as the peer's: every request then waits for nearly all the handshakes, and
p99 is the whole wave. Instead at most ``max_mesh_connects`` connects per endpoint are in
flight; the other requests queue (:func:`wait_turn`) and take, in arrival order, whichever
comes first: a connection another exchange releases, or the connect slot of a connect that
finished (then they open one themselves). Connections thus keep growing while requests
wait, a few handshakes at a time, and the first of them serve the queue meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from .config import Endpoint

__all__ = ["MAX_MESH_CONNECTS", "MESH_IDLE_TIMEOUT", "Pool", "Poolable", "Waiter", "wait_turn"]


#: How long an idle mesh (mTLS, proxy-to-proxy) connection is kept: under the peer proxy's
#: default client idle timeout (90 s) so that the peer never closes one we are about to reuse.
MESH_IDLE_TIMEOUT = 60.0

#: Mesh connects (TCP + mTLS handshake) in flight per endpoint; more requests queue for them.
MAX_MESH_CONNECTS = 4


class Poolable(Protocol):
    idle_since: float
    endpoint: Endpoint
    #: The server is a peer proxy reached over mesh mTLS (kept for ``mesh_idle_timeout``).
    meshed: bool

    def is_usable(self) -> bool: ...

    def close(self) -> None: ...


class Waiter(Protocol):
    """A request queued for a mesh connection (an :class:`asyncio.Future` in the proxy).

    Its result is the connection handed to it, or ``None``: a connect slot is now its own.
    """

    def done(self) -> bool: ...

    def set_result(self, result: Poolable | None, /) -> None: ...


class Pool:
    __slots__ = (
        "_connecting",
        "_idle",
        "_waiters",
        "idle_timeout",
        "max_idle_per_endpoint",
        "max_mesh_connects",
        "mesh_idle_timeout",
    )

    def __init__(
        self,
        *,
        idle_timeout: float,
        max_idle_per_endpoint: int,
        mesh_idle_timeout: float = MESH_IDLE_TIMEOUT,
        max_mesh_connects: int = MAX_MESH_CONNECTS,
    ) -> None:
        if max_mesh_connects < 1:
            raise ValueError(f"max_mesh_connects must be at least 1, not {max_mesh_connects}")
        self.idle_timeout = idle_timeout
        #: Never shorter than ``idle_timeout``: an operator's longer setting still applies.
        self.mesh_idle_timeout = max(mesh_idle_timeout, idle_timeout)
        self.max_idle_per_endpoint = max_idle_per_endpoint
        self.max_mesh_connects = max_mesh_connects
        self._idle: dict[Endpoint, list[Poolable]] = {}
        self._connecting: dict[Endpoint, int] = {}
        self._waiters: dict[Endpoint, deque[Waiter]] = {}

    # -- rationing new mesh connections -------------------------------------------------------

    def try_connect(self, endpoint: Endpoint) -> bool:
        """Take a connect slot for ``endpoint``; ``False``: all are taken, queue instead.

        A request queued earlier goes first: a newcomer does not overtake the queue.
        """
        connecting = self._connecting.get(endpoint, 0)
        if connecting >= self.max_mesh_connects or self._has_waiters(endpoint):
            return False
        self._connecting[endpoint] = connecting + 1
        return True

    def connect_done(self, endpoint: Endpoint) -> None:
        """A connect that held a slot finished (either way): the slot passes to the queue."""
        waiter = self._next_waiter(endpoint)
        if waiter is not None:
            waiter.set_result(None)
            return
        connecting = self._connecting.get(endpoint, 0) - 1
        if connecting > 0:
            self._connecting[endpoint] = connecting
        else:
            self._connecting.pop(endpoint, None)

    def queue(self, endpoint: Endpoint, waiter: Waiter) -> None:
        """Queue ``waiter`` for the next connection released or connect slot freed."""
        waiters = self._waiters.get(endpoint)
        if waiters is None:
            waiters = self._waiters[endpoint] = deque()
        while waiters and waiters[0].done():  # cancelled meanwhile
            waiters.popleft()
        waiters.append(waiter)

    def connecting(self, endpoint: Endpoint) -> int:
        return self._connecting.get(endpoint, 0)

    def queued(self, endpoint: Endpoint) -> int:
        return sum(1 for w in self._waiters.get(endpoint, ()) if not w.done())

    def _has_waiters(self, endpoint: Endpoint) -> bool:
        waiters = self._waiters.get(endpoint)
        while waiters and waiters[0].done():
            waiters.popleft()
        if waiters is not None and not waiters:
            del self._waiters[endpoint]
            return False
        return waiters is not None

    def _next_waiter(self, endpoint: Endpoint) -> Waiter | None:
        if not self._has_waiters(endpoint):
            return None
        waiters = self._waiters[endpoint]
        waiter = waiters.popleft()
        if not waiters:
            del self._waiters[endpoint]
        return waiter

    # -- idle connections ---------------------------------------------------------------------

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
        """Return a connection whose last exchange finished cleanly.

        A request queued for this endpoint takes it at once; otherwise it waits idle. One
        that cannot be used again is closed.
        """
        if not conn.is_usable():
            conn.close()
            return
        endpoint = conn.endpoint
        if self._waiters:  # no request waits anywhere, the usual case: skip
            waiter = self._next_waiter(endpoint)
            if waiter is not None:
                waiter.set_result(conn)
                return
        idle = self._idle.get(endpoint)
        if idle is None:
            idle = self._idle[endpoint] = []
        if len(idle) >= self.max_idle_per_endpoint:
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


async def wait_turn(pool: Pool, endpoint: Endpoint) -> Poolable | None:
    """Wait for a mesh connection to ``endpoint`` or for a connect slot.

    Returns an idle or released connection, or ``None`` when the caller now holds a connect
    slot: it connects and then calls :meth:`Pool.connect_done`, whatever the outcome. If the
    caller is cancelled after something was handed to it, that is passed on, not lost.
    """
    loop = asyncio.get_running_loop()
    while True:
        conn = pool.acquire(endpoint)
        if conn is not None:
            return conn
        if pool.try_connect(endpoint):
            return None
        waiter: asyncio.Future[Poolable | None] = loop.create_future()
        pool.queue(endpoint, waiter)
        try:
            handed = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                give_back(pool, endpoint, waiter.result(), loop.time())
            raise
        if handed is None or handed.is_usable():
            return handed
        handed.close()  # closed by its server on the way: queue again


def give_back(pool: Pool, endpoint: Endpoint, turn: Poolable | None, now: float) -> None:
    """Return what :func:`wait_turn` gave to a request that no longer needs it."""
    if turn is None:
        pool.connect_done(endpoint)
    elif turn.is_usable():
        pool.release(turn, now)
    else:
        turn.close()
