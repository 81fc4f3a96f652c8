"""Jittered exponential backoff, as a pure calculator.

The informer asks for the next delay after each failure and resets after a success. The
random source is injected so tests can pin it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays grow ``base * 2**n`` up to ``cap``; each is scaled by a random factor in
    ``[1 - jitter, 1]`` so that many watchers restarting together spread out."""

    base: float = 0.2
    cap: float = 10.0
    jitter: float = 0.5
    rand: Callable[[], float] = field(default=random.random)
    failures: int = 0

    def next_delay(self) -> float:
        raw = min(self.cap, self.base * (2 ** min(self.failures, 30)))
        self.failures += 1
        return float(raw * (1.0 - self.jitter * self.rand()))

    def reset(self) -> None:
        self.failures = 0
