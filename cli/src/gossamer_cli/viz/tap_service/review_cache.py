"""Bounds on the reviews the tap service asks the apiserver for (pure, time passed in).

Every call to the tap service with a bearer token costs a ``TokenReview`` and a
``SubjectAccessReview``, which anyone reaching the service can ask for. As Kubernetes's
delegating authenticator and authorizer do, answers are remembered for a few seconds, keyed
by a digest (never the token itself), in a cache of bounded size; and at most a fixed number
of reviews are in flight at once, a call beyond that being answered 429 at once rather than
queued.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, Generic, TypeVar

from gossamer_cli.viz.tap_service.authz import AuthError

__all__ = ["REVIEW_TTL", "ReviewCache", "ReviewGate", "review_key"]

#: How long an answer is reused, in seconds (Kubernetes's delegating default).
REVIEW_TTL: Final = 10.0
MAX_CACHED_REVIEWS: Final = 4096
MAX_REVIEWS_IN_FLIGHT: Final = 16

V = TypeVar("V")


def review_key(*parts: str | bytes) -> bytes:
    """A digest of what was reviewed (a token, a review's attributes)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.digest()


class ReviewCache(Generic[V]):
    """Answers by key for ``ttl`` seconds, at most ``max_entries`` of them (the oldest go)."""

    def __init__(self, ttl: float = REVIEW_TTL, max_entries: int = MAX_CACHED_REVIEWS) -> None:
        if ttl < 0 or max_entries < 1:
            raise ValueError("a review cache needs ttl >= 0 and max_entries >= 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: float) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if now >= expires:
            del self._entries[key]
            return None
        return value

    def put(self, key: bytes, value: V, now: float) -> None:
        self._entries.pop(key, None)
        while self._entries:  # entries are in expiry order: drop the expired ones
            oldest = next(iter(self._entries.values()))
            if now < oldest[0]:
                break
            self._entries.popitem(last=False)
        while len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)
        self._entries[key] = (now + self.ttl, value)


class ReviewGate:
    """At most ``limit`` reviews in flight; one more is refused (429), not queued."""

    def __init__(self, limit: int = MAX_REVIEWS_IN_FLIGHT) -> None:
        if limit < 1:
            raise ValueError("a review gate needs a limit >= 1")
        self.limit = limit
        self.in_flight = 0

    @contextmanager
    def admit(self) -> Iterator[None]:
        if self.in_flight >= self.limit:
            raise AuthError(429, f"too many reviews in flight (at most {self.limit}); retry")
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
