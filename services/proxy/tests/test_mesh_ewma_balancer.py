"""Peak-EWMA and P2C balancing with injected time and randomness."""

from __future__ import annotations

import math
import random

import pytest
from gossamer_proxy.mesh.accrual import ConsecutiveFailures
from gossamer_proxy.mesh.backoff import Backoff
from gossamer_proxy.mesh.balancer import Outcome, P2cBalancer
from gossamer_proxy.mesh.ewma import DEFAULT_RTT, PeakEwma
from hypothesis import given, settings
from hypothesis import strategies as st


class Fixed:
    """An RNG that replays values in [0, 1)."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0) if self.values else 0.0


def test_ewma_starts_at_default_rtt_and_cost_scales_with_pending() -> None:
    ewma = PeakEwma(now=100.0)
    assert ewma.estimate(100.0) == pytest.approx(DEFAULT_RTT)
    assert ewma.cost(100.0) == pytest.approx(DEFAULT_RTT)
    ewma.start()
    ewma.start()
    assert ewma.cost(100.0) == pytest.approx(3 * DEFAULT_RTT)


def test_ewma_peak_jumps_up_immediately() -> None:
    ewma = PeakEwma(now=0.0)
    ewma.observe(0.5, now=0.001)
    assert ewma.estimate(0.001) == pytest.approx(0.5)


def test_ewma_lower_samples_blend_in_with_decay_weight() -> None:
    ewma = PeakEwma(now=0.0, default_rtt=1.0, decay=10.0)
    ewma.observe(0.0, now=10.0)
    # Old estimate weight exp(-1), sample 0 weight 1 - exp(-1).
    assert ewma.estimate(10.0) == pytest.approx(math.exp(-1))


def test_ewma_idle_decays_towards_zero_and_reads_do_not_mutate() -> None:
    ewma = PeakEwma(now=0.0, default_rtt=1.0, decay=10.0)
    assert ewma.estimate(20.0) == pytest.approx(math.exp(-2))
    assert ewma.estimate(0.0) == pytest.approx(1.0)


def test_ewma_rejects_negative_rtt_and_bad_config() -> None:
    ewma = PeakEwma(now=0.0)
    with pytest.raises(ValueError, match="rtt"):
        ewma.observe(-1.0, now=1.0)
    with pytest.raises(ValueError, match="decay"):
        PeakEwma(now=0.0, decay=0.0)


def test_finish_decrements_pending_and_cancel_never_goes_negative() -> None:
    ewma = PeakEwma(now=0.0)
    ewma.start()
    ewma.finish(0.01, now=1.0)
    assert ewma.pending == 0
    ewma.cancel()
    assert ewma.pending == 0


def test_p2c_prefers_the_cheaper_of_two() -> None:
    lb: P2cBalancer[str, None] = P2cBalancer()
    lb.update({"fast": None, "slow": None}, now=0.0)
    lb.slot("slow").load.observe(1.0, now=0.0)
    for _ in range(20):
        dispatch = lb.pick(now=0.0, rng=random.Random(7))
        assert dispatch is not None
        assert dispatch.key == "fast"
        lb.finish(dispatch, Outcome.CANCELLED, now=0.0, rng=Fixed())


def test_p2c_pending_requests_shift_load() -> None:
    lb: P2cBalancer[str, None] = P2cBalancer()
    lb.update({"a": None, "b": None}, now=0.0)
    first = lb.pick(now=0.0, rng=Fixed(0.0, 0.0))
    assert first is not None
    second = lb.pick(now=0.0, rng=Fixed(0.0, 0.0))
    assert second is not None
    assert {first.key, second.key} == {"a", "b"}


def test_update_keeps_state_for_survivors_and_drops_removed() -> None:
    lb: P2cBalancer[str, int] = P2cBalancer()
    lb.update({"a": 1, "b": 1}, now=0.0)
    lb.slot("a").load.observe(2.0, now=0.0)
    result = lb.update({"a": 2, "c": 1}, now=1.0)
    assert result.added == ("c",)
    assert result.removed == ("b",)
    assert result.changed == ("a",)
    assert lb.slot("a").load.estimate(1.0) > 1.0
    assert lb.slot("a").meta == 2
    assert "b" not in lb


def test_pick_returns_none_without_available_endpoints() -> None:
    lb: P2cBalancer[str, None] = P2cBalancer()
    assert lb.pick(now=0.0, rng=Fixed()) is None
    lb.update({"a": None}, now=0.0)
    lb.set_ready("a", False)
    assert lb.pick(now=0.0, rng=Fixed()) is None
    assert lb.counts(0.0) == (0, 1)
    lb.set_ready("a", True)
    assert lb.counts(0.0) == (1, 0)


def test_ejected_endpoint_is_excluded_then_probed() -> None:
    backoff = Backoff(min=5.0, max=60.0, jitter_ratio=0.0)
    lb: P2cBalancer[str, None] = P2cBalancer(
        accrual=lambda: ConsecutiveFailures(max_failures=2, backoff=backoff)
    )
    lb.update({"bad": None, "good": None}, now=0.0)
    for _ in range(2):
        dispatch = lb.pick(now=0.0, rng=Fixed(0.0, 0.0))
        assert dispatch is not None
        assert dispatch.key == "bad"
        lb.finish(dispatch, Outcome.FAILURE, now=0.0, rng=Fixed())
    assert lb.ejected() == ["bad"]
    for _ in range(5):
        dispatch = lb.pick(now=1.0, rng=random.Random(3))
        assert dispatch is not None
        assert dispatch.key == "good"
        lb.finish(dispatch, Outcome.SUCCESS, now=1.0, rng=Fixed())
    # After the backoff "bad" may take exactly one probe.
    lb.slot("good").load.start()  # make "good" look busier so the probe goes to "bad"
    lb.slot("good").load.observe(5.0, now=5.0)
    probe = lb.pick(now=5.0, rng=Fixed(0.0, 0.0))
    assert probe is not None
    assert probe.key == "bad"
    assert probe.probe
    assert lb.counts(5.0) == (1, 1)
    lb.finish(probe, Outcome.SUCCESS, now=5.1, rng=Fixed())
    assert lb.ejected() == []


@settings(max_examples=200, deadline=None)
@given(
    keys=st.lists(st.integers(0, 30), min_size=0, max_size=12, unique=True),
    ejected=st.sets(st.integers(0, 30)),
    seed=st.integers(0, 2**32),
)
def test_p2c_never_picks_an_unavailable_endpoint(
    keys: list[int], ejected: set[int], seed: int
) -> None:
    lb: P2cBalancer[int, None] = P2cBalancer(
        accrual=lambda: ConsecutiveFailures(1, Backoff(10.0, 10.0))
    )
    lb.update(dict.fromkeys(keys), now=0.0)
    rng = random.Random(seed)
    for key in keys:
        if key in ejected:
            lb.slot(key).accrual.on_failure(0.0, rng)
    available = [k for k in keys if k not in ejected]
    for _ in range(10):
        dispatch = lb.pick(now=1.0, rng=rng)
        if not available:
            assert dispatch is None
            continue
        assert dispatch is not None
        assert dispatch.key in available
        lb.finish(dispatch, Outcome.SUCCESS, now=1.0 + rng.random(), rng=rng)
    assert all(s.load.pending == 0 for s in lb.slots())
