"""The connect timeout judges the socket, not how late a busy loop ran the timer.

Each test blocks the event loop (as a burst of TLS handshakes on a loaded machine does) from
right after the connect started until past the deadline, so that the timer and the socket's
readiness are both due when the loop wakes: uvloop runs the timer first. A connect the kernel
completed meanwhile must succeed; one that nobody answers must still time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time
from collections.abc import Iterator

import pytest
from gossamer_proxy.config import Endpoint
from gossamer_proxy.connect import Connector
from gossamer_proxy.connect_deadline import ConnectDeadline
from gossamer_proxy.errors import ProxyError, ProxyErrorKind

TIMEOUT = 0.05


def block_loop_past(deadline: float) -> None:
    """Hold the loop (no callback, no I/O) until the monotonic clock has passed ``deadline``."""
    while time.monotonic() <= deadline:
        time.sleep(deadline - time.monotonic() + TIMEOUT)


def block_once_connected(listener: socket.socket, deadline: float, blocked: list[bool]) -> None:
    """Each loop turn, look whether the kernel completed a connect to ``listener``; then block.

    The connect is issued a few turns after it is asked for (uvloop resolves the address
    first), so the check repeats until the connection waits in the listener's backlog.
    """
    if not select.select([listener], [], [], 0)[0]:
        asyncio.get_running_loop().call_soon(block_once_connected, listener, deadline, blocked)
        return
    blocked.append(True)
    block_loop_past(deadline)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listening socket that never accepts: the kernel completes connects into its backlog."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    with sock:
        yield sock


async def test_a_connect_completed_while_the_loop_was_blocked_is_not_timed_out(
    listener: socket.socket,
) -> None:
    loop = asyncio.get_running_loop()
    connector = Connector(TIMEOUT)
    started = time.monotonic()
    opening = asyncio.ensure_future(
        connector.open(Endpoint(*listener.getsockname()), asyncio.Protocol)
    )
    blocked: list[bool] = []
    loop.call_soon(block_once_connected, listener, started + 2 * TIMEOUT, blocked)
    transport, _ = await opening
    assert blocked == [True]
    assert transport.get_extra_info("peername") == listener.getsockname()
    transport.close()


async def test_a_connect_nobody_answers_still_times_out_after_a_blocked_loop() -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(0)
    fillers: list[socket.socket] = []
    try:
        for _ in range(4):  # fill the backlog: further SYNs are dropped, connects hang
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(blocker.getsockname())
            fillers.append(filler)
        loop = asyncio.get_running_loop()
        connector = Connector(TIMEOUT)
        opening = asyncio.ensure_future(
            connector.open(Endpoint(*blocker.getsockname()), asyncio.Protocol)
        )
        loop.call_soon(block_loop_past, time.monotonic() + 2 * TIMEOUT)
        with pytest.raises(ProxyError) as caught:
            await opening
        assert caught.value.kind is ProxyErrorKind.CONNECT_TIMEOUT
    finally:
        for filler in fillers:
            filler.close()
        blocker.close()


async def test_handshake_bytes_that_arrived_in_time_are_read_before_the_deadline_judges() -> None:
    """The flight arrives while the loop handles other I/O: the next turn runs timers first."""
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    busy, wake = socket.socketpair()
    ours.setblocking(False)
    busy.setblocking(False)
    answered: asyncio.Future[bytes] = loop.create_future()

    def other_connection_busy() -> None:
        loop.remove_reader(busy.fileno())
        peer.send(b"server flight")  # lands in the kernel while this callback holds the loop
        block_loop_past(started + 2 * TIMEOUT)

    loop.add_reader(ours.fileno(), lambda: answered.done() or answered.set_result(ours.recv(64)))
    loop.add_reader(busy.fileno(), other_connection_busy)
    try:
        started = time.monotonic()
        async with ConnectDeadline(TIMEOUT) as deadline:
            deadline.watch(ours, connecting=False, finished=answered.done)
            wake.send(b"go")
            assert await answered == b"server flight"
    finally:
        loop.remove_reader(ours.fileno())
        for sock in (ours, peer, busy, wake):
            sock.close()


async def wait_within_deadline(sock: socket.socket, pending: asyncio.Future[None]) -> None:
    async with ConnectDeadline(TIMEOUT) as deadline:
        deadline.watch(sock, connecting=False)
        await pending


async def test_a_silent_peer_times_out_and_a_stuck_one_gets_bounded_grace() -> None:
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    try:
        with pytest.raises(TimeoutError):
            await wait_within_deadline(ours, loop.create_future())
        # Bytes wait forever (nothing reads them): the grace is bounded, the deadline fires.
        peer.send(b"dribble")
        with pytest.raises(TimeoutError):
            await wait_within_deadline(ours, loop.create_future())
    finally:
        ours.close()
        peer.close()
