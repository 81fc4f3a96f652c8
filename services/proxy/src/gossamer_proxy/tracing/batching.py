"""A bounded span queue that hands out export batches by size or age (sans-io).

The request path only ever calls :meth:`SpanQueue.offer`, which is O(1) and never waits:
when the queue holds :attr:`~SpanQueue.capacity` spans, the new span is dropped and counted
(the proxy's memory stays bounded however slow or dead the collector is). The exporter asks
:meth:`~SpanQueue.take` for the next batch: a full batch at once, or whatever has waited
``max_delay`` seconds since the oldest queued span arrived. Time is passed in.

The defaults are linkerd2-proxy's batch span processor's: a queue of 1000 spans and a
5-second delay; a batch holds at most 512 spans (OpenTelemetry's default export size).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .spans import FinishedSpan

__all__ = ["BatchConfig", "SpanQueue"]


@dataclass(frozen=True, slots=True)
class BatchConfig:
    capacity: int = 1000
    max_batch: int = 512
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.max_batch < 1:
            raise ValueError("span queue capacity and batch size must be at least 1")
        if self.max_delay < 0:
            raise ValueError("span batch delay must not be negative")


@dataclass(slots=True)
class SpanQueue:
    config: BatchConfig = field(default_factory=BatchConfig)
    #: Spans refused because the queue was full, since start.
    dropped: int = 0
    _spans: deque[FinishedSpan] = field(default_factory=deque)
    #: When the oldest span now queued arrived (``None`` while empty).
    _oldest_at: float | None = None

    @property
    def capacity(self) -> int:
        return self.config.capacity

    def __len__(self) -> int:
        return len(self._spans)

    def offer(self, span: FinishedSpan, now: float) -> bool:
        """Queue ``span``; ``False`` (and counted in :attr:`dropped`) when the queue is full."""
        if len(self._spans) >= self.config.capacity:
            self.dropped += 1
            return False
        if not self._spans:
            self._oldest_at = now
        self._spans.append(span)
        return True

    def due_at(self) -> float | None:
        """When :meth:`take` next returns a batch (``None``: nothing queued).

        A full batch is due at once, which is any time not after the oldest arrival.
        """
        if self._oldest_at is None:
            return None
        if len(self._spans) >= self.config.max_batch:
            return self._oldest_at
        return self._oldest_at + self.config.max_delay

    def take(self, now: float, *, flush: bool = False) -> list[FinishedSpan]:
        """The next batch if one is due at ``now`` (or anything queued, with ``flush``)."""
        due = self.due_at()
        if due is None or (now < due and not flush):
            return []
        count = min(len(self._spans), self.config.max_batch)
        batch = [self._spans.popleft() for _ in range(count)]
        # What is left waited since before ``now``; measure its age from this hand-out so a
        # backlog goes out in full batches at once, and a remainder after ``max_delay``.
        self._oldest_at = now if self._spans else None
        return batch
