"""Jittered exponential backoff, the one retry schedule every mesh loop shares.

Linkerd's ``ExponentialBackoff {min_backoff, max_backoff, jitter_ratio}`` (linkerd-wire.md §1.8)
drives failure-accrual ejection, control-plane stream reconnects and identity retries. The
base delay doubles from ``min`` per attempt and is capped at ``max``; a uniformly random
jitter of up to ``jitter_ratio`` x base is then added so that many proxies that failed
together do not retry together. Randomness is a parameter (:class:`Random`-like), so tests
pin it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Backoff", "UniformSource"]


class UniformSource(Protocol):
    """The part of :class:`random.Random` the cores use: a float in ``[0, 1)``."""

    def random(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """An exponential backoff policy (seconds)."""

    min: float
    max: float
    jitter_ratio: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.max:
            raise ValueError(f"backoff needs 0 <= min <= max, got min={self.min} max={self.max}")
        if not 0 <= self.jitter_ratio <= 100:
            raise ValueError(f"jitter_ratio must be in 0..100, got {self.jitter_ratio}")

    def base(self, attempt: int) -> float:
        """The un-jittered delay before retry number ``attempt`` (0-based)."""
        if attempt < 0:
            raise ValueError(f"attempt must not be negative, got {attempt}")
        # Cap the exponent: 2**64 x min already exceeds any sane max.
        return min(self.max, self.min * float(2 ** min(attempt, 64)))

    def delay(self, attempt: int, rng: UniformSource) -> float:
        """The delay before retry ``attempt``: the base plus up to ``jitter_ratio`` x base."""
        base = self.base(attempt)
        return base + base * self.jitter_ratio * rng.random()
