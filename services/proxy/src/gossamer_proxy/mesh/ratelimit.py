"""Inbound HTTP local rate limits (``HTTPLocalRateLimitPolicy``), decided sans-io.

The inbound policy API attaches an ``HttpLocalRateLimit`` to a Server's HTTP protocol
(linkerd-wire.md §1.7, §7): a ``total`` limit on all requests together, an ``identity``
limit applied to each client identity separately (clients without an identity share one
budget), and ``overrides`` that give the listed identities their own shared budget instead
of the identity limit. As in Linkerd's proxy, a request is checked against the total limit
first, then against its override if the client has one, else against the identity limit;
a request refused by a later limit has still used its token of an earlier one.

Each limit of ``N`` requests per second is a token bucket holding at most ``N`` tokens and
refilled at ``N`` per second, which is the quota Linkerd's limiter uses (a burst of one
second's worth). Time is a parameter: callers pass ``now`` (a monotonic clock reading).
Refused requests are answered 429 (gRPC ``RESOURCE_EXHAUSTED``) and counted in
``inbound_http_local_ratelimit_total``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from gossamer_proxy.mesh.authz import MetaLabels

__all__ = [
    "MAX_TRACKED_IDENTITIES",
    "LocalRateLimiter",
    "RateLimitRefusal",
    "RateLimitSpec",
    "TokenBucket",
]

#: Per-identity buckets kept at most; the least recently used one is forgotten beyond this
#: (its client starts again from a full bucket), so memory stays bounded whatever connects.
MAX_TRACKED_IDENTITIES: Final = 10_000


class TokenBucket:
    """At most ``per_second`` tokens, refilled continuously at ``per_second`` a second."""

    __slots__ = ("capacity", "tokens", "updated")

    def __init__(self, per_second: int, now: float) -> None:
        if per_second < 1:
            raise ValueError(f"a rate limit must allow at least 1 request/s, got {per_second}")
        self.capacity = float(per_second)
        self.tokens = self.capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.capacity)
            self.updated = now

    def try_take(self, now: float) -> bool:
        """Take one token if there is one (a clock that steps back refills nothing)."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def is_full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity


@dataclass(frozen=True, slots=True)
class RateLimitSpec:
    """What an ``HttpLocalRateLimit`` asks for (requests per second; ``None``: no limit)."""

    meta: MetaLabels
    total: int | None = None
    identity: int | None = None
    overrides: tuple[tuple[int, frozenset[str]], ...] = ()


@dataclass(frozen=True, slots=True)
class RateLimitRefusal:
    """Which limit refused a request: ``scope`` is ``total``, ``identity`` or ``override``."""

    scope: str
    requests_per_second: int
    meta: MetaLabels

    @property
    def message(self) -> str:
        scope = "per-identity" if self.scope == "identity" else self.scope
        return f"{scope} rate limit exceeded: {self.requests_per_second}rps"


class LocalRateLimiter:
    """The buckets of one Server's rate limit; :meth:`check` decides each request."""

    __slots__ = ("_identities", "_max_identities", "_overrides", "_total", "spec")

    def __init__(self, spec: RateLimitSpec, *, max_identities: int = MAX_TRACKED_IDENTITIES):
        self.spec = spec
        self._max_identities = max_identities
        self._total: TokenBucket | None = None
        self._identities: OrderedDict[str | None, TokenBucket] = OrderedDict()
        #: One bucket per override entry, shared by all the identities it lists.
        self._overrides: dict[str, tuple[int, list[TokenBucket]]] = {}
        for rps, identities in spec.overrides:
            shared: list[TokenBucket] = []  # created on first use, with that use's time
            for identity in identities:
                self._overrides.setdefault(identity, (rps, shared))

    def __eq__(self, other: object) -> bool:
        """Limiters are equal when their specs are (a policy update that keeps the same
        limit keeps the policy, and so the buckets, already in force)."""
        return isinstance(other, LocalRateLimiter) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    def check(self, identity: str | None, now: float) -> RateLimitRefusal | None:
        """``None`` if the request may go on, else the limit that refused it."""
        spec = self.spec
        if spec.total is not None:
            if self._total is None:
                self._total = TokenBucket(spec.total, now)
            if not self._total.try_take(now):
                return RateLimitRefusal("total", spec.total, spec.meta)
        if identity is not None:
            override = self._overrides.get(identity)
            if override is not None:
                rps, shared = override
                if not shared:
                    shared.append(TokenBucket(rps, now))
                if not shared[0].try_take(now):
                    return RateLimitRefusal("override", rps, spec.meta)
                return None
        if spec.identity is not None and not self._identity_bucket(identity, now).try_take(now):
            return RateLimitRefusal("identity", spec.identity, spec.meta)
        return None

    def _identity_bucket(self, identity: str | None, now: float) -> TokenBucket:
        buckets = self._identities
        bucket = buckets.get(identity)
        if bucket is not None:
            buckets.move_to_end(identity)
            return bucket
        assert self.spec.identity is not None
        bucket = buckets[identity] = TokenBucket(self.spec.identity, now)
        while len(buckets) > self._max_identities:
            buckets.popitem(last=False)
        return bucket

    def tracked_identities(self) -> int:
        return len(self._identities)
