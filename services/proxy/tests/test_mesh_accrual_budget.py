"""Failure accrual and the retry budget, with injected time."""

from __future__ import annotations

import pytest
from gossamer_proxy.mesh.accrual import AccrualState, ConsecutiveFailures
from gossamer_proxy.mesh.backoff import Backoff
from gossamer_proxy.mesh.retry_budget import RetryBudget, RetryBudgetConfig
from hypothesis import given, settings
from hypothesis import strategies as st


class Fixed:
    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def state_of(accrual: ConsecutiveFailures) -> AccrualState:
    return accrual.state


def test_backoff_doubles_caps_and_jitters() -> None:
    backoff = Backoff(min=1.0, max=10.0, jitter_ratio=0.5)
    assert [backoff.base(n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.delay(1, Fixed(0.0)) == 2.0
    assert backoff.delay(1, Fixed(0.999)) == pytest.approx(2.999)
    assert backoff.base(10_000) == 10.0
    with pytest.raises(ValueError, match="min <= max"):
        Backoff(min=5.0, max=1.0)


def test_accrual_ejects_after_consecutive_failures_only() -> None:
    accrual = ConsecutiveFailures(max_failures=3, backoff=Backoff(1.0, 60.0))
    accrual.on_failure(0.0, Fixed())
    accrual.on_failure(0.0, Fixed())
    accrual.on_success()
    accrual.on_failure(0.0, Fixed())
    accrual.on_failure(0.0, Fixed())
    assert state_of(accrual) is AccrualState.AVAILABLE
    accrual.on_failure(10.0, Fixed())
    assert state_of(accrual) is AccrualState.EJECTED
    assert accrual.reopen_at == 11.0
    assert not accrual.available(10.5)


def test_accrual_single_probe_then_doubling_backoff() -> None:
    accrual = ConsecutiveFailures(max_failures=1, backoff=Backoff(1.0, 4.0))
    accrual.on_failure(0.0, Fixed())
    assert accrual.available(1.0)
    assert accrual.on_dispatch(1.0) is True
    assert state_of(accrual) is AccrualState.PROBING
    assert not accrual.available(1.0)  # only one probe at a time
    with pytest.raises(RuntimeError, match="probing"):
        accrual.on_dispatch(1.0)
    accrual.on_failure(1.5, Fixed(), probe=True)
    assert accrual.reopen_at == 3.5  # backoff doubled to 2s
    accrual.on_dispatch(3.5)
    accrual.on_failure(3.5, Fixed(), probe=True)
    assert accrual.reopen_at == 7.5  # 4s
    accrual.on_dispatch(7.5)
    accrual.on_failure(7.5, Fixed(), probe=True)
    assert accrual.reopen_at == 11.5  # capped at max
    accrual.on_dispatch(11.5)
    accrual.on_success(probe=True)
    assert state_of(accrual) is AccrualState.AVAILABLE
    accrual.on_failure(20.0, Fixed())
    assert accrual.reopen_at == 21.0  # backoff reset after recovery


def test_accrual_ignores_stragglers_and_cancelled_probe_allows_reprobe() -> None:
    accrual = ConsecutiveFailures(max_failures=1, backoff=Backoff(1.0, 4.0))
    accrual.on_failure(0.0, Fixed())
    accrual.on_success()  # a request sent before the ejection: does not restore
    assert state_of(accrual) is AccrualState.EJECTED
    accrual.on_dispatch(2.0)
    accrual.on_cancel(2.5, probe=True)
    assert state_of(accrual) is AccrualState.EJECTED
    assert accrual.available(2.5)


def test_accrual_disabled_with_zero() -> None:
    accrual = ConsecutiveFailures(max_failures=0)
    for _ in range(100):
        accrual.on_failure(0.0, Fixed())
    assert state_of(accrual) is AccrualState.AVAILABLE


def test_budget_reserve_allows_min_retries_per_second_times_ttl() -> None:
    budget = RetryBudget(RetryBudgetConfig(retry_ratio=0.0, min_retries_per_second=2, ttl=5.0), 0.0)
    allowed = sum(budget.withdraw(1.0) for _ in range(50))
    assert allowed == 10


def test_budget_deposits_add_ratio_and_expire_after_ttl() -> None:
    budget = RetryBudget(
        RetryBudgetConfig(retry_ratio=0.2, min_retries_per_second=0, ttl=10.0), 0.0
    )
    for _ in range(50):
        budget.deposit(0.0)
    assert sum(budget.withdraw(1.0) for _ in range(50)) == 10
    assert not budget.can_retry(1.0)
    for _ in range(50):
        budget.deposit(5.0)
    assert budget.can_retry(5.0)
    # After the TTL the t=0 deposits are gone (and were spent anyway); the t=5 ones remain.
    assert budget.balance(10.5) == 50 * 200
    assert budget.balance(16.0) == 0


def test_budget_spends_deposits_before_reserve_and_reserve_refills() -> None:
    config = RetryBudgetConfig(retry_ratio=1.0, min_retries_per_second=1, ttl=2.0)
    budget = RetryBudget(config, 0.0)
    budget.deposit(0.0)
    assert budget.balance(0.0) == 3000  # 1 deposited + 2 reserve
    assert budget.withdraw(0.0)
    assert budget.balance(0.0) == 2000  # the deposit went first
    assert budget.withdraw(0.0)
    assert budget.withdraw(0.0)
    assert not budget.withdraw(0.0)
    assert budget.balance(2.5) == 2000  # reserve spending expired with the window


def test_budget_rejects_bad_config_and_clamps_ttl() -> None:
    with pytest.raises(ValueError, match="retry_ratio"):
        RetryBudgetConfig(retry_ratio=-0.1)
    with pytest.raises(ValueError, match="ttl"):
        RetryBudgetConfig(ttl=0)
    assert RetryBudgetConfig(ttl=600).effective_ttl == 60.0
    assert RetryBudgetConfig(ttl=0.1).effective_ttl == 1.0


@settings(max_examples=200, deadline=None)
@given(
    ratio=st.floats(0.0, 1.0),
    min_per_second=st.integers(0, 20),
    events=st.lists(st.tuples(st.floats(0.0, 0.5), st.booleans()), min_size=1, max_size=300),
)
def test_budget_never_allows_more_than_ratio_plus_reserve(
    ratio: float, min_per_second: int, events: list[tuple[float, bool]]
) -> None:
    """Within any run shorter than one slot, retries <= ratio x requests + reserve."""
    config = RetryBudgetConfig(retry_ratio=ratio, min_retries_per_second=min_per_second, ttl=10.0)
    budget = RetryBudget(config, 0.0)
    now, deposits, retries = 0.0, 0, 0
    for step, is_request in events:
        now = min(now + step / 1000, 0.99)  # stays inside the first 1 s slot
        if is_request:
            budget.deposit(now)
            deposits += 1
        elif budget.withdraw(now):
            retries += 1
    assert retries * 1000 <= round(ratio * 1000) * deposits + min_per_second * 10 * 1000
    assert budget.balance(now) >= 0
