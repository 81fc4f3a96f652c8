"""Graceful shutdown for asyncio services: signal → stop accepting → drain → exit.

Linkerd's contract (and Kubernetes' expectation): on SIGTERM/SIGINT, or the admin
``POST /shutdown``, stop accepting new connections and requests, let the ones in
flight finish, and exit when they have, or when the grace period runs out,
whichever comes first. A second signal skips the rest of the wait.

Usage in a service::

    shutdown = Shutdown(grace=settings.shutdown_grace_period)
    shutdown.install_signal_handlers()
    shutdown.on_stop_accepting(server.close)          # listeners
    ...
    with shutdown.track():                           # around each unit of work
        await handle(request)
    ...
    await shutdown.wait()
    drained = await shutdown.drain()
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
from collections.abc import Awaitable, Callable, Iterator

import structlog

__all__ = ["Shutdown"]

_log = structlog.get_logger("gossamer.shutdown")

StopCallback = Callable[[], Awaitable[object] | object]


class Shutdown:
    """Coordinates one process-wide drain. Create it inside the running event loop."""

    def __init__(self, grace: float) -> None:
        if grace < 0:
            raise ValueError(f"shutdown grace period must not be negative, got {grace}")
        self.grace = grace
        self.reason: str | None = None
        self._requested = asyncio.Event()
        self._forced = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight = 0
        self._stoppers: list[StopCallback] = []
        self._signals: list[int] = []

    # -- requesting -------------------------------------------------------------------------

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def request(self, reason: str) -> None:
        """Ask for shutdown (idempotent). A second request while draining forces the exit."""
        if self._requested.is_set():
            if not self._forced.is_set():
                _log.warning("shutdown_forced", reason=reason, in_flight=self._in_flight)
                self._forced.set()
            return
        self.reason = reason
        _log.info("shutdown_requested", reason=reason, grace_seconds=self.grace)
        self._requested.set()

    async def wait(self) -> None:
        await self._requested.wait()

    def install_signal_handlers(
        self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.add_signal_handler(sig, self.request, sig.name)
            self._signals.append(sig)

    def remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals.clear()

    # -- work tracking ----------------------------------------------------------------------

    def on_stop_accepting(self, callback: StopCallback) -> None:
        """Register a callable (sync or async) that stops a listener from accepting."""
        self._stoppers.append(callback)

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count a unit of in-flight work (a connection or request) for the drain to wait on."""
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    # -- draining ---------------------------------------------------------------------------

    async def drain(self) -> bool:
        """Stop accepting, wait for in-flight work up to the grace period.

        Returns True when everything finished in time, False on timeout or a forced exit.
        Stop callbacks that fail are logged and do not stop the drain.
        """
        if not self.requested:
            self.request("drain")
        for stop in self._stoppers:
            try:
                result = stop()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                _log.exception("shutdown_stop_accepting_failed", callback=repr(stop))
        idle = asyncio.ensure_future(self._idle.wait())
        forced = asyncio.ensure_future(self._forced.wait())
        try:
            await asyncio.wait({idle, forced}, timeout=self.grace, return_when="FIRST_COMPLETED")
        finally:
            idle.cancel()
            forced.cancel()
        drained = self._in_flight == 0
        if drained:
            _log.info("shutdown_drained")
        else:
            _log.warning(
                "shutdown_grace_expired" if not self._forced.is_set() else "shutdown_forced_exit",
                in_flight=self._in_flight,
            )
        return drained
