"""The upstream HTTP/2 connections one client connection's streams are multiplexed over.

Outbound with discovery every stream picks its own endpoint, so a client connection needs a
connection to each endpoint its streams were sent to; this pool keeps them, keyed by the
endpoint and its TLS plan (the same address reached with another identity or ALPN is a
different connection). A stream takes any usable connection to its endpoint (not closed,
no GOAWAY received, below the server's ``SETTINGS_MAX_CONCURRENT_STREAMS``) and a new one
is made when there is none; streams that need the same endpoint while a connect is under
way wait for that connect instead of each making their own.

The pool belongs to the client connection, not to the listener. HTTP/2 flow control is
end to end per stream in this bridge (client DATA is acknowledged only once the upstream
window let it through) and an upstream connection's events are delivered to one client
connection's state machine; sharing upstream connections between client connections would
put every client's streams behind one connection's windows and event handler. Per-client
pools keep one client's failure (a protocol error, an abrupt close) from touching another
client's streams, and tearing a client connection down closes exactly what it used. The
cost is one upstream connection per (client connection, endpoint) pair, which a gRPC client
(one long-lived connection, many streams) amortises well.

Connections left without streams close after the idle timeout (:meth:`UpstreamPool.sweep`,
run from the client connection's housekeeping tick).
"""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar

from ..config import Endpoint
from ..connect import UpstreamTls

__all__ = ["PoolKey", "Pooled", "UpstreamPool"]

PoolKey = tuple[Endpoint, UpstreamTls | None]


class Pooled(Protocol):
    """What the pool needs of an upstream connection."""

    @property
    def busy(self) -> bool:
        """Whether any stream is open on it."""
        ...

    def usable(self) -> bool: ...

    def close_when_idle(self) -> None: ...


C = TypeVar("C", bound=Pooled)


class UpstreamPool(Generic[C]):
    """Upstream connections by endpoint; in-flight connects; idle expiry."""

    __slots__ = ("_conns", "_idle_since", "connecting")

    def __init__(self) -> None:
        self._conns: dict[PoolKey, list[C]] = {}
        self._idle_since: dict[C, float] = {}
        #: Connects under way, so that streams to the same endpoint share one.
        self.connecting: dict[PoolKey, asyncio.Future[C]] = {}

    def __len__(self) -> int:
        return sum(len(conns) for conns in self._conns.values())

    def usable(self, key: PoolKey) -> C | None:
        """A connection to ``key`` that can take one more stream, or ``None``."""
        conns = self._conns.get(key)
        if conns:
            for conn in conns:
                if conn.usable():
                    return conn
        return None

    def add(self, key: PoolKey, conn: C) -> None:
        self._conns.setdefault(key, []).append(conn)

    def discard(self, conn: C) -> None:
        """Forget ``conn`` (it closed)."""
        self._idle_since.pop(conn, None)
        for key, conns in self._conns.items():
            if conn in conns:
                conns.remove(conn)
                if not conns:
                    del self._conns[key]
                return

    def connections(self) -> list[C]:
        return [conn for conns in self._conns.values() for conn in conns]

    def sweep(self, now: float, idle_timeout: float) -> None:
        """Close the connections that have had no stream for ``idle_timeout`` seconds.

        Idleness is sampled at each call (the housekeeping tick), so a connection closes
        between one and two ticks after its idle timeout.
        """
        for conn in self.connections():
            if conn.busy:
                self._idle_since.pop(conn, None)
                continue
            since = self._idle_since.setdefault(conn, now)
            if now - since >= idle_timeout:
                self.discard(conn)
                conn.close_when_idle()

    def close_all(self) -> None:
        """Close every connection once its streams are done (the client went away)."""
        conns = self.connections()
        self._conns.clear()
        self._idle_since.clear()
        for conn in conns:
            conn.close_when_idle()
