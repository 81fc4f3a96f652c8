"""Interleaved rounds and what they give: the run order, per-round ratios, median and range.

A target measured once, after another, takes whatever the machine did during its few
seconds: a noisy moment lands on one side only. The benchmark therefore runs every target
in every round (A, B, A, B, …), pairs the targets' figures round by round, and reports the
median of the per-round ratios with their minimum and maximum. Nothing here measures;
it only orders and reduces.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Spread", "paired", "paired_ratios", "schedule"]


def schedule(targets: Sequence[str], rounds: int) -> list[list[str]]:
    """The order of ``targets`` in each round.

    Each round runs every target once; the starting target rotates from round to round so
    that no target always runs first (right after a warm-up or a previous target's load).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    if len(set(targets)) != len(targets):
        raise ValueError(f"targets repeat: {list(targets)}")
    n = len(targets)
    return [[targets[(r + i) % n] for i in range(n)] for r in range(rounds)]


@dataclass(frozen=True, slots=True)
class Spread:
    """The median of a few per-round values and their range."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        """``None`` when there is nothing to summarise (every round failed)."""
        if not values:
            return None
        return cls(statistics.median(values), min(values), max(values), len(values))

    @property
    def width(self) -> float:
        return self.high - self.low

    def format(self, digits: int = 2, unit: str = "x") -> str:
        text = f"{self.median:.{digits}f}{unit}"
        if self.count > 1:
            text += f" ({self.low:.{digits}f}-{self.high:.{digits}f})"
        return text


def paired(
    mine: Sequence[float | None], reference: Sequence[float | None]
) -> list[tuple[float, float]]:
    """The rounds where both sides have a figure, as (mine, reference) pairs.

    Round ``i`` of one target is paired with round ``i`` of the other: they ran back to
    back, so they share the machine's state at that time.
    """
    return [
        (m, r) for m, r in zip(mine, reference, strict=False) if m is not None and r is not None
    ]


def paired_ratios(mine: Sequence[float | None], reference: Sequence[float | None]) -> list[float]:
    """``mine / reference`` per round, skipping rounds where either is missing or zero."""
    return [m / r for m, r in paired(mine, reference) if r]
