"""Linkerd's retry budget: retries may add at most ``retry_ratio`` of the original traffic.

ServiceProfile ``RetryBudget {retry_ratio, min_retries_per_second, ttl}`` (linkerd-wire.md
§1.5, §9 outbound step 7; default 0.2 / 10 / 10 s). Every original request *deposits*
``retry_ratio`` of a token, every retry *withdraws* one whole token, and a retry is allowed
only while a token is available. Deposits and withdrawals expire after ``ttl``, so the
budget tracks recent traffic; ``min_retries_per_second x ttl`` tokens are always available
on top, so a quiet service can still retry a little.

The window is kept as ten slots of ``ttl / 10`` seconds each, so expiry costs O(1) per call
and memory stays constant however busy the route is. Tokens are integers in thousandths, so
sums never drift.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["RetryBudget", "RetryBudgetConfig"]

_SCALE = 1000
_SLOTS = 10
MIN_TTL = 1.0
MAX_TTL = 60.0


@dataclass(frozen=True, slots=True)
class RetryBudgetConfig:
    retry_ratio: float = 0.2
    min_retries_per_second: int = 10
    ttl: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.retry_ratio <= 1000.0:
            raise ValueError(f"retry_ratio must be in 0..1000, got {self.retry_ratio}")
        if self.min_retries_per_second < 0:
            raise ValueError(
                f"min_retries_per_second must not be negative, got {self.min_retries_per_second}"
            )
        if self.ttl <= 0:
            raise ValueError(f"ttl must be positive, got {self.ttl}")

    @property
    def effective_ttl(self) -> float:
        """The TTL clamped to 1..60 s, the range Linkerd's budget accepts."""
        return min(MAX_TTL, max(MIN_TTL, self.ttl))


class RetryBudget:
    """A time-windowed token budget shared by all requests on one route set.

    A retry spends deposited tokens oldest first (those about to expire anyway), and only
    then the reserve; reserve spending is remembered for one TTL, so the reserve refills
    at ``min_retries_per_second``. Spent deposits are gone for good, so a burst of retries
    never leaves a debt that outlives the requests that paid for it.
    """

    __slots__ = ("_deposit", "_reserve", "_slot_len", "_slots", "_withdraw", "config")

    def __init__(self, config: RetryBudgetConfig, now: float) -> None:
        self.config = config
        ttl = config.effective_ttl
        self._slot_len = ttl / _SLOTS
        self._deposit = round(config.retry_ratio * _SCALE)
        self._withdraw = _SCALE
        self._reserve = config.min_retries_per_second * round(ttl * _SCALE)
        # [slot index, deposited tokens left, reserve tokens spent], oldest first.
        self._slots: deque[list[int]] = deque([[self._index(now), 0, 0]])

    def _index(self, now: float) -> int:
        return int(now // self._slot_len)

    def _current(self, now: float) -> list[int]:
        index = self._index(now)
        oldest_kept = index - _SLOTS + 1
        while self._slots and self._slots[0][0] < oldest_kept:
            self._slots.popleft()
        if not self._slots or self._slots[-1][0] < index:
            self._slots.append([index, 0, 0])
        return self._slots[-1]

    def balance(self, now: float) -> int:
        """Tokens available now, in thousandths (reserve included)."""
        self._current(now)
        deposits = sum(slot[1] for slot in self._slots)
        reserve_spent = sum(slot[2] for slot in self._slots)
        return deposits + max(0, self._reserve - reserve_spent)

    def deposit(self, now: float) -> None:
        """An original (non-retry) request was sent."""
        self._current(now)[1] += self._deposit

    def can_retry(self, now: float) -> bool:
        return self.balance(now) >= self._withdraw

    def withdraw(self, now: float) -> bool:
        """Take a token for one retry; ``False`` (and nothing taken) if the budget is spent."""
        if self.balance(now) < self._withdraw:
            return False
        needed = self._withdraw
        for slot in self._slots:
            taken = min(slot[1], needed)
            slot[1] -= taken
            needed -= taken
            if not needed:
                return True
        self._slots[-1][2] += needed
        return True
