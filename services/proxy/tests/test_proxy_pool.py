"""The upstream keep-alive pool (time passed in)."""

from __future__ import annotations

from dataclasses import dataclass

from gossamer_proxy.config import Endpoint
from gossamer_proxy.pool import Pool

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
