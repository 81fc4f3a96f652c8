"""The connect timeout, judged by the socket rather than by when the event loop got to it.

A busy loop (a burst of TLS handshakes, a loaded machine) can run a connect's timer long
after the kernel finished the connect or the peer's handshake flight arrived: uvloop runs
due timers before it polls for I/O, so after one long stretch of work every connect started
before it would time out although none of the peers was late. A production proxy must not
turn its own slowness into ``504 connect timed out``.

So when the deadline fires, :class:`ConnectDeadline` first asks the socket whether it holds
progress the loop has not yet handled (:func:`pending_io`): the connect completed (the
socket is writable or failed), or bytes of the handshake are waiting to be read. If so, the
loop gets one more I/O poll to handle them, and the deadline is judged again; it only gives
such a grace :data:`MAX_GRACE_POLLS` times. A peer that never answers leaves nothing
pending, so it still times out on time.
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import Callable
from types import TracebackType

__all__ = ["MAX_GRACE_POLLS", "ConnectDeadline", "pending_io"]

#: How many times an expired deadline lets the loop poll once more for I/O that arrived in
#: time; each grace is one loop turn, so a peer that keeps dribbling bytes cannot keep a
#: connect alive for long.
MAX_GRACE_POLLS = 8
#: The grace's re-check is a timer this far out: a timer, so that the loop polls for I/O
#: before it runs (uvloop runs a zero-delay timer in the same pass, before polling).
_GRACE_DELAY = 0.001


def pending_io(sock: socket.socket, *, connecting: bool) -> bool:
    """Whether ``sock`` has readiness the loop has not handled yet.

    While ``connecting``, a writable (or failed) socket means the kernel finished the
    connect; afterwards (during a TLS handshake), readable bytes or EOF mean the peer has
    answered.
    """
    interest = select.POLLOUT | select.POLLIN if connecting else select.POLLIN
    poller = select.poll()
    poller.register(sock.fileno(), interest)
    return bool(poller.poll(0))


class ConnectDeadline:
    """``async with ConnectDeadline(timeout):`` like ``asyncio.timeout``, judged as above.

    :meth:`watch` names the socket being connected and the phase (``connecting`` or not);
    ``finished`` reports that the phase completed (a TLS handshake whose last flight the
    loop has just handled) although the waiting task has not resumed yet. Raises
    :class:`TimeoutError` on expiry, as ``asyncio.timeout`` does.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._connecting = True
        self._finished: Callable[[], bool] | None = None
        self._graces = MAX_GRACE_POLLS
        self._scope: asyncio.Timeout | None = None
        self._timer: asyncio.TimerHandle | None = None

    def watch(
        self,
        sock: socket.socket,
        *,
        connecting: bool,
        finished: Callable[[], bool] | None = None,
    ) -> None:
        self._sock = sock
        self._connecting = connecting
        self._finished = finished

    async def __aenter__(self) -> ConnectDeadline:
        loop = asyncio.get_running_loop()
        self._scope = asyncio.timeout(None)
        await self._scope.__aenter__()
        self._timer = loop.call_at(loop.time() + self.timeout, self._expire)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        assert self._scope is not None
        await self._scope.__aexit__(exc_type, exc, tb)  # raises TimeoutError if it expired

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        if self._graces > 0 and self._progress_pending():
            self._graces -= 1
            self._timer = loop.call_later(_GRACE_DELAY, self._expire)
            return
        assert self._scope is not None
        self._scope.reschedule(loop.time())  # expires now: cancels the task, TimeoutError

    def _progress_pending(self) -> bool:
        if self._finished is not None and self._finished():
            return True
        sock = self._sock
        if sock is None or sock.fileno() < 0:
            return False
        try:
            return pending_io(sock, connecting=self._connecting)
        except (OSError, ValueError):
            return False
