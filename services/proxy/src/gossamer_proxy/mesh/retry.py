"""Whether to retry a request, and keeping its body so that it can be (sans-io).

Retries happen only when all of these hold (linkerd-wire.md §9 outbound step 7):

* the route allows them: a ServiceProfile route marked ``is_retryable`` in a profile with a
  retry budget, or a policy route with a ``Retry`` (``max_retries``, status ranges or gRPC
  codes), or ``l5d-retry-*`` headers where the route allows l5d request headers;
* the outcome is retryable: for profile routes a response classified as failure (or a
  transport error); for policy routes a status in the ranges / a listed gRPC code;
* attempts remain (``max_retries``) and, for profile routes, the retry budget has a token
  (otherwise the attempt counts as ``route_retryable_total{skipped="no_budget"}``);
* the request body could be replayed: it was kept whole in memory, which stops once it
  exceeds the buffer limit (64 KiB by default, ``max_request_bytes`` for policy routes) or
  when it is streamed without an end (:class:`ReplayBody`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from gossamer_proxy.mesh.classify import Classification
from gossamer_proxy.mesh.retry_budget import RetryBudget

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "ReplayBody",
    "RetryCondition",
    "RetryVerdict",
    "decide_retry",
]

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024


class ReplayBody:
    """Keeps a copy of a request body while it stays under ``limit`` bytes."""

    __slots__ = ("_chunks", "_complete", "_limit", "_size", "_spilled")

    def __init__(self, limit: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._spilled = False
        self._complete = False

    def feed(self, chunk: bytes) -> None:
        """Record a chunk as it is forwarded; past the limit the copy is dropped."""
        if self._spilled:
            return
        self._size += len(chunk)
        if self._size > self._limit:
            self._spilled = True
            self._chunks.clear()
            return
        self._chunks.append(chunk)

    def end(self) -> None:
        """The body ended (a body still streaming cannot be replayed)."""
        self._complete = True

    @property
    def replayable(self) -> bool:
        return self._complete and not self._spilled

    def chunks(self) -> tuple[bytes, ...]:
        if not self.replayable:
            raise RuntimeError("request body cannot be replayed")
        return tuple(self._chunks)


@dataclass(frozen=True, slots=True)
class RetryCondition:
    """A policy route's ``Retry`` (or the equivalent ``l5d-retry-*`` headers)."""

    max_retries: int = 1
    status_ranges: tuple[tuple[int, int], ...] = ((500, 599),)
    grpc_codes: frozenset[int] = frozenset()
    timeout: float | None = None

    def matches(self, status: int | None, grpc: int | None, error: bool) -> bool:
        if error or status is None:
            return True
        if grpc is not None and grpc != 0:
            return grpc in self.grpc_codes
        return any(low <= status <= high for low, high in self.status_ranges)


class RetryVerdict(enum.Enum):
    RETRY = "retry"
    NOT_RETRYABLE = "not_retryable"
    """The route or outcome does not call for a retry."""
    NO_BUDGET = "no_budget"
    EXHAUSTED = "exhausted"
    """``max_retries`` reached."""
    BODY_NOT_REPLAYABLE = "body_not_replayable"


def decide_retry(
    *,
    attempt: int,
    body: ReplayBody | None,
    now: float,
    profile_failure: Classification | None = None,
    budget: RetryBudget | None = None,
    condition: RetryCondition | None = None,
    status: int | None = None,
    grpc: int | None = None,
    error: bool = False,
) -> RetryVerdict:
    """Decide after attempt number ``attempt`` (1 = the original request) has finished.

    Profile routes pass ``profile_failure`` (the route's classification) and the
    ``budget``; policy routes pass ``condition``. A granted retry withdraws from the budget.
    """
    if profile_failure is not None:
        if profile_failure is not Classification.FAILURE:
            return RetryVerdict.NOT_RETRYABLE
    elif condition is None or not condition.matches(status, grpc, error):
        return RetryVerdict.NOT_RETRYABLE
    if condition is not None and attempt > condition.max_retries:
        return RetryVerdict.EXHAUSTED
    if body is not None and not body.replayable:
        return RetryVerdict.BODY_NOT_REPLAYABLE
    if budget is not None and not budget.withdraw(now):
        return RetryVerdict.NO_BUDGET
    return RetryVerdict.RETRY


def status_ranges(pairs: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Normalise ``(start, end)`` pairs (``end`` 0 = same as start), refusing bad ranges."""
    out: list[tuple[int, int]] = []
    for start, end in pairs:
        end = end or start
        if not 100 <= start <= end <= 599:
            raise ValueError(f"invalid retry status range {start}-{end}")
        out.append((start, end))
    return tuple(out)
