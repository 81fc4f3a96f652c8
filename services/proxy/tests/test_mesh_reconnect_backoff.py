"""Reconnect backoff: an endpoint whose connect failed is not picked until its backoff ends.

Pure logic with injected time and randomness (the balancer and its per-endpoint state), then
the asyncio glue in :class:`~gossamer_proxy.outbound.backend.Backend`: queued requests wait
(instead of failing) while every endpoint backs off, and a timer wakes them when one may be
dialled again.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import destination_pb2
from gossamer_proxy.errors import ProxyError, ProxyErrorKind
from gossamer_proxy.mesh.accrual import ConsecutiveFailures
from gossamer_proxy.mesh.backoff import Backoff
from gossamer_proxy.mesh.balancer import Dispatch, Outcome, P2cBalancer
from gossamer_proxy.mesh.endpoints import EndpointTable
from gossamer_proxy.mesh.reconnect import (
    CONNECT_BACKOFF,
    CONNECT_BACKOFF_MAX,
    CONNECT_BACKOFF_MIN,
    ReconnectBackoff,
)
from gossamer_proxy.mesh.watch_state import WatchState
from gossamer_proxy.outbound.backend import Backend
from hypothesis import given, settings
from hypothesis import strategies as st

EXACT = Backoff(min=0.1, max=0.5, jitter_ratio=0.0)


class Fixed:
    """An RNG that replays values in [0, 1), then 0.0."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0) if self.values else 0.0


def balancer(*keys: str, backoff: Backoff = EXACT) -> P2cBalancer[str, None]:
    lb: P2cBalancer[str, None] = P2cBalancer(connect_backoff=backoff)
    lb.update(dict.fromkeys(keys), now=0.0)
    return lb


def pick(
    lb: P2cBalancer[str, None], now: float, avoid: tuple[str, ...] = ()
) -> Dispatch[str, None]:
    dispatch = lb.pick(now, random.Random(1), avoid=avoid)
    assert dispatch is not None
    return dispatch


# -- defaults -------------------------------------------------------------------------------


def test_defaults_follow_linkerds_outbound_connect_backoff() -> None:
    assert (CONNECT_BACKOFF_MIN, CONNECT_BACKOFF_MAX) == (0.1, 0.5)
    assert CONNECT_BACKOFF.min == CONNECT_BACKOFF_MIN
    assert CONNECT_BACKOFF.max == CONNECT_BACKOFF_MAX
    assert 0 < CONNECT_BACKOFF.jitter_ratio <= 1


# -- the balancer -----------------------------------------------------------------------------


def test_failed_connect_takes_the_endpoint_out_until_the_backoff_ends() -> None:
    lb = balancer("dead", "live")
    dispatch = pick(lb, 0.0, avoid=("live",))
    assert dispatch.key == "dead"
    lb.finish(dispatch, Outcome.CONNECT_FAILURE, 1.0, Fixed())
    assert lb.counts(1.0) == (1, 1)  # reported pending while it backs off
    for _ in range(50):  # even when asked to avoid the live one, P2C never dials "dead"
        other = pick(lb, 1.05, avoid=("live",))
        assert other.key == "live"
        lb.finish(other, Outcome.SUCCESS, 1.06, Fixed())
    assert lb.next_available_at(1.05) == pytest.approx(1.1)
    comeback = lb.next_available_at(1.05)
    assert comeback is not None
    assert lb.counts(comeback) == (2, 0)  # backoff over: available again, the next pick redials
    assert pick(lb, comeback, avoid=("live",)).key == "dead"


def test_consecutive_connect_failures_double_the_backoff_up_to_max() -> None:
    lb = balancer("dead")
    now = 0.0
    waits = []
    for _ in range(5):
        dispatch = pick(lb, now)
        lb.finish(dispatch, Outcome.CONNECT_FAILURE, now, Fixed())
        assert lb.pick(now, Fixed()) is None
        comeback = lb.next_available_at(now)
        assert comeback is not None
        waits.append(round(comeback - now, 6))
        now = comeback
    assert waits == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_the_backoff_is_jittered_with_the_injected_rng() -> None:
    jittered = Backoff(min=0.1, max=0.5, jitter_ratio=0.5)
    lb = balancer("a", backoff=jittered)
    lb.finish(pick(lb, 0.0), Outcome.CONNECT_FAILURE, 0.0, Fixed(0.5))
    assert lb.next_available_at(0.0) == pytest.approx(0.1 + 0.1 * 0.5 * 0.5)


@pytest.mark.parametrize("outcome", [Outcome.SUCCESS, Outcome.FAILURE])
def test_a_reached_endpoint_resets_the_backoff(outcome: Outcome) -> None:
    """A response, even a failed one, proves a connection could be made."""
    lb = balancer("a")
    lb.finish(pick(lb, 0.0), Outcome.CONNECT_FAILURE, 0.0, Fixed())
    lb.finish(pick(lb, 0.1), Outcome.CONNECT_FAILURE, 0.1, Fixed())
    comeback = lb.next_available_at(0.1)
    assert comeback is not None
    assert comeback == pytest.approx(0.3)  # second step: 0.2
    lb.finish(pick(lb, comeback), outcome, 0.31, Fixed())
    assert lb.slot("a").reconnect.failures == 0
    lb.finish(pick(lb, 0.4), Outcome.CONNECT_FAILURE, 0.4, Fixed())
    assert lb.next_available_at(0.4) == pytest.approx(0.5)  # first step again


def test_concurrent_failures_of_one_outage_count_once() -> None:
    """Requests that were all dialling the dead endpoint bring no new evidence each."""
    lb = balancer("dead", "live")
    inflight = [pick(lb, 0.0, avoid=("live",)) for _ in range(10)]
    assert {d.key for d in inflight} == {"dead"}
    lb.finish(inflight[0], Outcome.CONNECT_FAILURE, 1.0, Fixed())
    for dispatch in inflight[1:6]:  # within the backoff: no growth, no extension
        lb.finish(dispatch, Outcome.CONNECT_FAILURE, 1.05, Fixed())
    reconnect = lb.slot("dead").reconnect
    assert reconnect.failures == 1
    assert reconnect.until == pytest.approx(1.1)
    # One arriving after the backoff: still failing, so out again, at the same step.
    lb.finish(inflight[6], Outcome.CONNECT_FAILURE, 1.2, Fixed())
    assert reconnect.failures == 1
    assert reconnect.until == pytest.approx(1.3)
    comeback = reconnect.until
    # An old request's success says nothing about new connects.
    lb.finish(inflight[7], Outcome.SUCCESS, 1.25, Fixed())
    assert not lb.slot("dead").available(1.25)
    assert lb.slot("dead").load.pending == 2  # inflight[8:] are still dialling
    # A fresh pick after the backoff that fails grows the backoff.
    fresh = pick(lb, comeback, avoid=("live",))
    assert fresh.key == "dead"
    lb.finish(fresh, Outcome.CONNECT_FAILURE, 1.4, Fixed())
    assert reconnect.failures == 2
    assert reconnect.until == pytest.approx(1.6)
    for dispatch in inflight[8:]:
        lb.finish(dispatch, Outcome.CANCELLED, 1.5, Fixed())
    assert lb.slot("dead").load.pending == 0


def test_stale_failure_after_a_newer_success_is_ignored() -> None:
    state = ReconnectBackoff(EXACT)
    old = state.generation
    state.on_connect_failure(old, 0.0, Fixed())
    state.on_connected(state.generation)  # a request picked after the failure got through
    state.on_connect_failure(old, 5.0, Fixed())  # a request from before the failure
    assert state.available(5.0)
    assert state.failures == 0


def test_connect_failure_feeds_latency_but_not_failure_accrual() -> None:
    lb: P2cBalancer[str, None] = P2cBalancer(
        accrual=lambda: ConsecutiveFailures(max_failures=1, backoff=Backoff(5.0, 5.0)),
        connect_backoff=EXACT,
    )
    lb.update({"a": None}, now=0.0)
    lb.finish(pick(lb, 0.0), Outcome.CONNECT_FAILURE, 1.0, Fixed())
    slot = lb.slot("a")
    assert slot.load.estimate(1.0) == pytest.approx(1.0)  # the 1 s connect timeout, as a peak
    assert lb.ejected() == []  # accrual judges responses; there was none
    assert lb.next_available_at(1.0) == pytest.approx(1.1)
    # A failed response does count: both judges must then let it through.
    lb.finish(pick(lb, 1.1), Outcome.FAILURE, 1.2, Fixed())
    assert lb.ejected() == ["a"]
    assert lb.next_available_at(1.2) == pytest.approx(6.2)


def test_accrual_probe_whose_connect_failed_is_not_left_probing() -> None:
    lb: P2cBalancer[str, None] = P2cBalancer(
        accrual=lambda: ConsecutiveFailures(max_failures=1, backoff=Backoff(5.0, 5.0)),
        connect_backoff=EXACT,
    )
    lb.update({"a": None}, now=0.0)
    lb.finish(pick(lb, 0.0), Outcome.FAILURE, 0.0, Fixed())
    probe = pick(lb, 5.0)
    assert probe.probe
    lb.finish(probe, Outcome.CONNECT_FAILURE, 5.0, Fixed())
    # No verdict on the response: probed again as soon as the reconnect backoff allows.
    assert lb.next_available_at(5.0) == pytest.approx(5.1)
    again = pick(lb, 5.1)
    assert again.probe
    lb.finish(again, Outcome.SUCCESS, 5.2, Fixed())
    assert lb.ejected() == []


def test_unavailable_without_a_deadline_has_no_wakeup() -> None:
    lb = balancer("a")
    assert lb.next_available_at(0.0) is None  # available: nothing to wait for
    lb.set_ready("a", False)
    assert lb.next_available_at(0.0) is None  # only an event (set_ready) brings it back


def test_removed_endpoint_failure_is_harmless() -> None:
    lb = balancer("a", "b")
    dispatch = pick(lb, 0.0, avoid=("b",))
    lb.update({"b": None}, now=0.5)
    lb.finish(dispatch, Outcome.CONNECT_FAILURE, 1.0, Fixed())
    assert lb.counts(1.0) == (1, 0)
    assert lb.next_available_at(1.0) is None


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    steps=st.lists(
        st.tuples(st.sampled_from(list(Outcome)), st.floats(0.0, 0.3)), min_size=1, max_size=40
    ),
)
def test_never_picks_an_endpoint_in_reconnect_backoff(
    seed: int, steps: list[tuple[Outcome, float]]
) -> None:
    lb = balancer("a", "b", "c", backoff=CONNECT_BACKOFF)
    rng = random.Random(seed)
    now = 0.0
    inflight: list[Dispatch[str, None]] = []
    for outcome, advance in steps:
        now += advance
        dispatch = lb.pick(now, rng)
        ready, pending = lb.counts(now)
        assert ready + pending == 3
        if dispatch is None:
            assert ready == 0
            comeback = lb.next_available_at(now)
            assert comeback is not None
            assert comeback > now
        else:
            assert dispatch.slot.reconnect.available(now)
            inflight.append(dispatch)
        if inflight:
            lb.finish(inflight.pop(rng.randrange(len(inflight))), outcome, now, rng)
        for slot in lb.slots():
            assert slot.reconnect.until <= now + CONNECT_BACKOFF_MAX * 1.1 + 1e-9


# -- the asyncio backend ---------------------------------------------------------------------


def _backend(*ports: int, failfast: float = 5.0, backoff: Backoff = EXACT) -> Backend:
    state: WatchState[EndpointTable] = WatchState("svc:80", EndpointTable())
    update = destination_pb2.Update(
        add=destination_pb2.WeightedAddrSet(
            addrs=[
                destination_pb2.WeightedAddr(addr=tcp_address_to_proto("10.1.0.1", p), weight=1)
                for p in ports
            ]
        )
    )
    assert state.value.apply(update).changed
    state.changed()
    return Backend("svc:80", state, failfast_timeout=failfast, connect_backoff=backoff)


async def test_requests_queue_while_every_endpoint_backs_off_then_go() -> None:
    backend = _backend(8080, backoff=Backoff(min=0.2, max=0.2))
    loop = asyncio.get_running_loop()
    try:
        failed = await backend.acquire()
        backend.finish(failed, Outcome.CONNECT_FAILURE)
        assert backend.counts() == (0, 1)
        began = loop.time()
        waiting = [asyncio.ensure_future(backend.acquire()) for _ in range(5)]
        await asyncio.sleep(0.05)
        assert not any(w.done() for w in waiting)  # queued, not failed
        assert len(backend.queue) == 5
        dispatches = await asyncio.wait_for(asyncio.gather(*waiting), 5)
        assert loop.time() - began >= 0.15  # woken by the backoff's end, not before
        for dispatch in dispatches:
            assert dispatch.meta.port == 8080
            backend.finish(dispatch, Outcome.SUCCESS)
        assert backend.counts() == (1, 0)
        assert len(backend.queue) == 0
    finally:
        await backend.close()


async def test_other_endpoints_take_the_requests_during_the_backoff() -> None:
    backend = _backend(8080, 8081, backoff=Backoff(min=30.0, max=30.0))
    try:
        first = await backend.acquire()
        backend.finish(first, Outcome.CONNECT_FAILURE)
        for _ in range(30):
            dispatch = await asyncio.wait_for(backend.acquire(), 1)
            assert dispatch.meta.port != first.meta.port
            backend.finish(dispatch, Outcome.SUCCESS)
        assert backend.counts() == (1, 1)
    finally:
        await backend.close()


async def test_endpoint_failing_beyond_failfast_gives_504_not_immediate_failure() -> None:
    backend = _backend(8080, failfast=0.2, backoff=Backoff(min=30.0, max=30.0))
    try:
        backend.finish(await backend.acquire(), Outcome.CONNECT_FAILURE)
        waiting = asyncio.ensure_future(backend.acquire())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        with pytest.raises(ProxyError) as failed:
            await asyncio.wait_for(waiting, 5)
        assert failed.value.kind is ProxyErrorKind.FAIL_FAST
        assert failed.value.kind.status == 504
    finally:
        await backend.close()


async def test_redispatch_after_failed_connect_waits_for_the_backoff_of_the_only_endpoint() -> None:
    """The re-dispatch of a request whose connect failed does not redial in a busy loop."""
    backend = _backend(8080, backoff=Backoff(min=0.1, max=0.1))
    try:
        first = await backend.acquire()
        backend.finish(first, Outcome.CONNECT_FAILURE)
        again = asyncio.ensure_future(backend.acquire((first.key,)))
        await asyncio.sleep(0.02)
        assert not again.done()
        second = await asyncio.wait_for(again, 5)
        assert second.key == first.key
        backend.finish(second, Outcome.SUCCESS)
    finally:
        await backend.close()


async def test_success_of_a_request_picked_before_the_failure_keeps_the_backoff() -> None:
    backend = _backend(8080, backoff=Backoff(min=30.0, max=30.0))
    try:
        pending = await backend.acquire()  # in flight on an earlier connection
        failed = await backend.acquire()
        backend.finish(failed, Outcome.CONNECT_FAILURE)
        waiting = asyncio.ensure_future(backend.acquire())
        await asyncio.sleep(0.02)
        assert not waiting.done()
        # ``pending`` was dispatched before the failure: its success is stale, still waiting.
        backend.finish(pending, Outcome.SUCCESS)
        await asyncio.sleep(0.02)
        assert not waiting.done()
        assert backend.counts() == (0, 1)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert len(backend.queue) == 0
    finally:
        await backend.close()
