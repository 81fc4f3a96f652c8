"""The upstream keep-alive pool (time passed in)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from gossamer_proxy.config import Endpoint
from gossamer_proxy.pool import Pool, wait_turn

EP = Endpoint("10.0.0.1", 80)


@dataclass(eq=False)
class FakeConn:
    endpoint: Endpoint = EP
    idle_since: float = 0.0
    usable: bool = True
    closed: bool = False
    meshed: bool = False

    def is_usable(self) -> bool:
        return self.usable and not self.closed

    def close(self) -> None:
        self.closed = True


def test_reuse_is_lifo() -> None:
    pool = Pool(idle_timeout=3.0, max_idle_per_endpoint=10)
    a, b = FakeConn(), FakeConn()
    pool.release(a, now=1.0)
    pool.release(b, now=2.0)
    assert pool.acquire(EP) is b
    assert pool.acquire(EP) is a
    assert pool.acquire(EP) is None


def test_connections_closed_by_the_server_are_skipped() -> None:
    pool = Pool(idle_timeout=3.0, max_idle_per_endpoint=10)
    a, b = FakeConn(), FakeConn()
    pool.release(a, now=1.0)
    pool.release(b, now=1.0)
    b.usable = False
    assert pool.acquire(EP) is a
    assert b.closed


def test_idle_timeout_sweep() -> None:
    pool = Pool(idle_timeout=3.0, max_idle_per_endpoint=10)
    old, fresh = FakeConn(), FakeConn()
    pool.release(old, now=10.0)
    pool.release(fresh, now=12.0)
    assert pool.sweep(now=13.5) == 1
    assert old.closed
    assert not fresh.closed
    assert pool.idle_count(EP) == 1


def test_max_idle_per_endpoint() -> None:
    pool = Pool(idle_timeout=3.0, max_idle_per_endpoint=1)
    a, b = FakeConn(), FakeConn()
    pool.release(a, now=1.0)
    pool.release(b, now=1.0)
    assert b.closed
    assert pool.idle_count() == 1


def test_close_all() -> None:
    pool = Pool(idle_timeout=3.0, max_idle_per_endpoint=10)
    conns = [FakeConn(endpoint=Endpoint("10.0.0.1", p)) for p in (80, 81)]
    for c in conns:
        pool.release(c, now=0.0)
    pool.close_all()
    assert all(c.closed for c in conns)
    assert pool.idle_count() == 0


# -- rationing new mesh connections ------------------------------------------------------------


class FakeWaiter:
    """A queued request, as the pool sees it (an asyncio future in the proxy)."""

    def __init__(self) -> None:
        self.results: list[FakeConn | None] = []
        self.cancelled = False

    def done(self) -> bool:
        return self.cancelled or bool(self.results)

    def set_result(self, result: FakeConn | None) -> None:  # type: ignore[override]
        assert not self.done(), "a waiter is answered once"
        self.results.append(result)


def test_connects_per_endpoint_are_bounded_and_the_rest_queue() -> None:
    pool = Pool(idle_timeout=3.0, max_idle_per_endpoint=10, max_mesh_connects=2)
    assert pool.try_connect(EP)
    assert pool.try_connect(EP)
    assert not pool.try_connect(EP)
    other = Endpoint("10.0.0.2", 80)
    assert pool.try_connect(other)  # each endpoint has its own slots
    assert (pool.connecting(EP), pool.connecting(other)) == (2, 1)


def test_a_finished_connect_hands_its_slot_to_the_first_waiter() -> None:
    pool = Pool(idle_timeout=3.0, max_idle_per_endpoint=10, max_mesh_connects=1)
    assert pool.try_connect(EP)
    first, second = FakeWaiter(), FakeWaiter()
    pool.queue(EP, first)
    pool.queue(EP, second)
    pool.connect_done(EP)
    assert first.results == [None]  # None: the slot is now the waiter's; it connects
    assert second.results == []
    assert pool.connecting(EP) == 1
    assert not pool.try_connect(EP)  # a newcomer does not overtake the queue
    pool.connect_done(EP)
    assert second.results == [None]
    pool.connect_done(EP)
    assert pool.connecting(EP) == 0
    assert pool.try_connect(EP)


def test_a_released_connection_goes_to_the_queue_before_the_idle_list() -> None:
    pool = Pool(idle_timeout=3.0, max_idle_per_endpoint=10, max_mesh_connects=1)
    assert pool.try_connect(EP)
    gone, waiting = FakeWaiter(), FakeWaiter()
    pool.queue(EP, gone)
    pool.queue(EP, waiting)
    gone.cancelled = True  # its client went away: skipped
    conn = FakeConn(meshed=True)
    pool.release(conn, now=1.0)
    assert waiting.results == [conn]
    assert pool.idle_count(EP) == 0
    assert pool.queued(EP) == 0
    pool.release(conn, now=2.0)  # nobody waits now: it goes idle
    assert pool.idle_count(EP) == 1


def test_a_dead_connection_is_not_handed_to_a_waiter() -> None:
    pool = Pool(idle_timeout=3.0, max_idle_per_endpoint=10, max_mesh_connects=1)
    assert pool.try_connect(EP)
    waiter = FakeWaiter()
    pool.queue(EP, waiter)
    pool.release(FakeConn(usable=False), now=1.0)
    assert waiter.results == []
    assert pool.queued(EP) == 1


def test_the_slot_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_mesh_connects"):
        Pool(idle_timeout=3.0, max_idle_per_endpoint=10, max_mesh_connects=0)


async def test_a_burst_waits_its_turn_in_arrival_order() -> None:
    pool = Pool(idle_timeout=3.0, max_idle_per_endpoint=10, max_mesh_connects=2)
    turns = [asyncio.ensure_future(wait_turn(pool, EP)) for _ in range(5)]
    await asyncio.sleep(0)  # each runs up to its first wait
    assert [t.done() for t in turns] == [True, True, False, False, False]
    assert [t.result() for t in turns[:2]] == [None, None]  # two connect slots
    assert pool.queued(EP) == 3
    conn = FakeConn(meshed=True)
    pool.release(conn, now=1.0)  # a finished exchange's connection: to the oldest waiter
    pool.connect_done(EP)  # a connect finished: its slot to the next
    await asyncio.sleep(0)
    assert turns[2].result() is conn
    assert turns[3].result() is None
    turns[4].cancel()
    await asyncio.gather(turns[4], return_exceptions=True)
    pool.connect_done(EP)
    pool.connect_done(EP)
    assert pool.connecting(EP) == 0  # the cancelled waiter held nothing


async def test_a_cancelled_waiter_passes_on_what_it_was_handed() -> None:
    pool = Pool(idle_timeout=3.0, max_idle_per_endpoint=10, max_mesh_connects=1)
    assert pool.try_connect(EP)
    first = asyncio.ensure_future(wait_turn(pool, EP))
    second = asyncio.ensure_future(wait_turn(pool, EP))
    await asyncio.sleep(0)
    conn = FakeConn(meshed=True)
    pool.release(conn, now=1.0)  # handed to ``first``, which is cancelled before it runs
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert first.cancelled()
    assert await second is conn
    pool.connect_done(EP)  # a slot handed to a cancelled waiter is not lost either
    assert pool.connecting(EP) == 0
