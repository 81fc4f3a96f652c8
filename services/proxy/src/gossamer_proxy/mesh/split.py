"""Weighted traffic split: pick one backend in proportion to its weight (sans-io).

Used for ServiceProfile ``dst_overrides`` (weights on a x10000 scale: ``1`` → 10000,
``500m`` → 5000) and for HTTPRoute ``backendRefs`` weights (``RandomAvailable``). Only the
ratios matter, so both scales work unchanged; canary, blue-green and A/B are all just
weights (A/B adds header matches in :mod:`.routes`). A backend of weight 0 gets no traffic;
if every weight is 0 there is nothing to choose and :meth:`WeightedSplit.choose` returns
``None`` (the caller fails the request rather than guessing).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Generic, TypeVar

from gossamer_proxy.mesh.backoff import UniformSource

__all__ = ["WeightedSplit"]

T = TypeVar("T")


class WeightedSplit(Generic[T]):
    """An immutable weighted choice over backends."""

    __slots__ = ("_backends", "_cumulative", "_total")

    def __init__(self, weighted: Iterable[tuple[T, int]]) -> None:
        backends: list[T] = []
        cumulative: list[int] = []
        total = 0
        for backend, weight in weighted:
            if weight < 0:
                raise ValueError(f"backend weight must not be negative, got {weight}")
            if weight == 0:
                continue
            total += weight
            backends.append(backend)
            cumulative.append(total)
        self._backends = tuple(backends)
        self._cumulative = tuple(cumulative)
        self._total = total

    def __len__(self) -> int:
        return len(self._backends)

    @property
    def backends(self) -> tuple[T, ...]:
        return self._backends

    def share(self, backend: T) -> float:
        """The fraction of traffic ``backend`` receives (0 if absent)."""
        if not self._total:
            return 0.0
        weight = 0
        previous = 0
        for candidate, running in zip(self._backends, self._cumulative, strict=True):
            if candidate == backend:
                weight += running - previous
            previous = running
        return weight / self._total

    def choose(self, rng: UniformSource) -> T | None:
        if not self._backends:
            return None
        if len(self._backends) == 1:
            return self._backends[0]
        point = int(rng.random() * self._total)
        index = bisect.bisect_right(self._cumulative, min(point, self._total - 1))
        return self._backends[index]
