"""Unified failure accrual: consecutive failures or a low success rate eject (injected time)."""

from __future__ import annotations

import random

import pytest
from gossamer_proxy.mesh.accrual import AccrualState, SuccessRate, UnifiedAccrual
from gossamer_proxy.mesh.backoff import Backoff
from gossamer_proxy.mesh.balancer import Outcome, P2cBalancer


class Fixed:
    def random(self) -> float:
        return 0.0


def state_of(accrual: UnifiedAccrual) -> AccrualState:
    return accrual.state  # a call, so mypy does not narrow the state between steps


def unified(
    threshold: float = 0.8, min_requests: int = 10, max_failures: int = 7
) -> UnifiedAccrual:
    return UnifiedAccrual(
        SuccessRate(threshold=threshold, decay=10.0, min_requests=min_requests),
        max_failures=max_failures,
        backoff=Backoff(1.0, 60.0),
    )


def test_a_low_success_rate_ejects_once_enough_requests_were_seen() -> None:
    accrual = unified()
    # Alternating outcomes never reach 7 consecutive failures, but the rate is 50%.
    for i in range(9):
        if i % 2:
            accrual.on_success(now=float(i) * 0.01)
        else:
            accrual.on_failure(float(i) * 0.01, Fixed())
    assert state_of(accrual) is AccrualState.AVAILABLE  # 9 < min_requests
    accrual.on_failure(0.1, Fixed())
    assert state_of(accrual) is AccrualState.EJECTED
    assert accrual.reopen_at == pytest.approx(1.1)


def test_a_healthy_rate_with_occasional_failures_stays_in() -> None:
    accrual = unified()
    now = 0.0
    for i in range(200):
        now += 0.01
        if i % 10 == 0:
            accrual.on_failure(now, Fixed())
        else:
            accrual.on_success(now=now)
    assert state_of(accrual) is AccrualState.AVAILABLE
    assert 0.85 < accrual.success_rate < 0.95


def test_old_failures_fade_with_decay() -> None:
    accrual = unified(min_requests=5)
    for i in range(4):
        accrual.on_failure(float(i) * 0.01, Fixed())
    # A minute later four failures weigh almost nothing against fresh successes.
    for i in range(6):
        accrual.on_success(now=60.0 + i * 0.01)
    assert accrual.success_rate > 0.95
    accrual.on_failure(60.1, Fixed())
    assert state_of(accrual) is AccrualState.AVAILABLE


def test_consecutive_failures_still_eject() -> None:
    accrual = unified(threshold=0.0, max_failures=3)
    for i in range(3):
        accrual.on_failure(float(i), Fixed())
    assert state_of(accrual) is AccrualState.EJECTED


def test_a_successful_probe_starts_the_rate_afresh() -> None:
    accrual = unified(min_requests=2)
    accrual.on_failure(0.0, Fixed())
    accrual.on_failure(0.0, Fixed())
    assert state_of(accrual) is AccrualState.EJECTED
    probe = accrual.on_dispatch(5.0)
    assert probe
    accrual.on_success(probe=True, now=5.0)
    assert state_of(accrual) is AccrualState.AVAILABLE
    assert accrual.success_rate == 1.0
    accrual.on_failure(5.1, Fixed())  # one failure after a fresh start is below min_requests
    assert state_of(accrual) is AccrualState.AVAILABLE


def test_a_failed_probe_ejects_again_for_longer() -> None:
    accrual = unified(min_requests=1)
    accrual.on_failure(0.0, Fixed())
    assert accrual.reopen_at == pytest.approx(1.0)
    assert accrual.on_dispatch(1.0)
    accrual.on_failure(1.0, Fixed(), probe=True)
    assert state_of(accrual) is AccrualState.EJECTED
    assert accrual.reopen_at == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("threshold", "decay", "min_requests", "message"),
    [(1.5, 10.0, 1, "threshold"), (0.5, 0.0, 1, "decay"), (0.5, 1.0, -1, "min_requests")],
)
def test_invalid_success_rate_settings_are_rejected(
    threshold: float, decay: float, min_requests: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SuccessRate(threshold=threshold, decay=decay, min_requests=min_requests)


def test_the_balancer_stops_picking_an_endpoint_whose_success_rate_fell() -> None:
    balancer: P2cBalancer[str, None] = P2cBalancer(accrual=lambda: unified(min_requests=10))
    balancer.update({"good": None, "bad": None}, 0.0)
    rng = random.Random(7)
    now = 0.0
    sent = {"good": 0, "bad": 0}
    ejected_at: float | None = None
    for _ in range(100):
        now += 0.001
        dispatch = balancer.pick(now, rng)
        assert dispatch is not None
        sent[dispatch.key] += 1
        # "bad" fails every other request: never 7 in a row, but a 50% success rate.
        failed = dispatch.key == "bad" and sent["bad"] % 2 == 0
        balancer.finish(dispatch, Outcome.FAILURE if failed else Outcome.SUCCESS, now, rng)
        if ejected_at is None and balancer.ejected():
            ejected_at = now
    assert balancer.ejected() == ["bad"]  # within the 1 s backoff: all of it went to "good"
    assert ejected_at is not None
    assert sent["bad"] < 30
