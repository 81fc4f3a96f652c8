"""The tap service's reviews are cached briefly, bounded in size and bounded in flight."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from gossamer_cli.viz.tap_service.api import parse_path
from gossamer_cli.viz.tap_service.auth import Authenticator
from gossamer_cli.viz.tap_service.authz import AuthError, Subject
from gossamer_cli.viz.tap_service.review_cache import ReviewCache, ReviewGate, review_key
from gossamer_kube.client import TokenReviewResult

TARGET_PATH = "/apis/tap.linkerd.io/v1alpha1/watch/namespaces/demo/deployments/web/tap"
TARGET = parse_path(TARGET_PATH)


@dataclass
class CountingKube:
    users: dict[str, str]
    allowed: set[str]
    tokens: list[str] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    hold: asyncio.Event | None = None
    two_asked: asyncio.Event = field(default_factory=asyncio.Event)

    async def token_review(self, token: str) -> TokenReviewResult:
        self.tokens.append(token)
        if len(self.tokens) == 2:
            self.two_asked.set()
        if self.hold is not None:
            await self.hold.wait()
        user = self.users.get(token)
        return TokenReviewResult(authenticated=user is not None, username=user or "")

    async def subject_access_review(self, review: dict[str, Any]) -> dict[str, Any]:
        self.reviews.append(review)
        return {"allowed": review["spec"]["user"] in self.allowed}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _authenticator(kube: CountingKube, clock: Clock, **kwargs: Any) -> Authenticator:
    return Authenticator(kube, monotonic=clock, **kwargs)  # type: ignore[arg-type]


async def test_a_token_is_reviewed_once_per_ten_seconds_good_or_bad() -> None:
    kube, clock = CountingKube({"good": "alice"}, {"alice"}), Clock()
    auth = _authenticator(kube, clock)
    for _ in range(5):
        assert (await auth.authenticate(None, "Bearer good")).user == "alice"
        with pytest.raises(AuthError) as refused:
            await auth.authenticate(None, "Bearer forged")
        assert refused.value.status == 401
    assert kube.tokens == ["good", "forged"]
    clock.now += 10.0
    await auth.authenticate(None, "Bearer good")
    assert kube.tokens == ["good", "forged", "good"]


async def test_an_access_review_is_asked_once_per_ten_seconds_per_subject_and_target() -> None:
    kube, clock = CountingKube({}, {"alice"}), Clock()
    auth = _authenticator(kube, clock)
    for _ in range(3):
        await auth.authorize(Subject("alice"), TARGET)
        with pytest.raises(AuthError):
            await auth.authorize(Subject("mallory"), TARGET)
    assert [r["spec"]["user"] for r in kube.reviews] == ["alice", "mallory"]
    # Other groups are another question.
    await auth.authorize(Subject("alice", ("devs",)), TARGET)
    assert len(kube.reviews) == 3
    clock.now += 10.0
    await auth.authorize(Subject("alice"), TARGET)
    assert len(kube.reviews) == 4


def test_the_cache_is_bounded_keyed_by_digest_and_forgets_expired_answers() -> None:
    cache: ReviewCache[str] = ReviewCache(ttl=10.0, max_entries=3)
    for n in range(10):
        cache.put(review_key(f"token-{n}"), f"user-{n}", now=float(n) / 100)
    assert len(cache) == 3
    assert cache.get(review_key("token-0"), now=0.5) is None
    assert cache.get(review_key("token-9"), now=0.5) == "user-9"
    assert b"token-9" not in b"".join(cache._entries)  # the token is never a key
    assert cache.get(review_key("token-9"), now=10.09) is None
    cache.put(review_key("late"), "x", now=50.0)
    assert len(cache) == 1  # the expired entries went


async def test_reviews_beyond_the_limit_in_flight_are_refused_429_not_queued() -> None:
    kube, clock = CountingKube({f"t{n}": f"u{n}" for n in range(4)}, set()), Clock()
    kube.hold = asyncio.Event()
    auth = _authenticator(kube, clock, gate=ReviewGate(limit=2))
    waiting = [asyncio.create_task(auth.authenticate(None, f"Bearer t{n}")) for n in range(2)]
    await kube.two_asked.wait()
    with pytest.raises(AuthError) as refused:
        await auth.authenticate(None, "Bearer t2")
    assert refused.value.status == 429
    assert kube.tokens == ["t0", "t1"]  # the third never reached the apiserver
    kube.hold.set()
    assert [s.user for s in await asyncio.gather(*waiting)] == ["u0", "u1"]
    assert (await auth.authenticate(None, "Bearer t3")).user == "u3"  # room again


async def test_a_full_service_asks_the_apiserver_nothing() -> None:
    from aiohttp.test_utils import TestClient, TestServer
    from gossamer_cli.viz.tap_service.server import MAX_SESSIONS, TapService

    kube, clock = CountingKube({"good": "alice"}, {"alice"}), Clock()

    async def resolve(*_: Any) -> list[Any]:
        raise AssertionError("never reached")

    service = TapService(_authenticator(kube, clock), resolve, credentials=None)  # type: ignore[arg-type]
    service._active = MAX_SESSIONS
    client = TestClient(TestServer(service.app()))
    await client.start_server()
    try:
        response = await client.post(
            TARGET_PATH, data=b"{}", headers={"Authorization": "Bearer good"}
        )
        assert response.status == 429
    finally:
        await client.close()
    assert kube.tokens == []
    assert kube.reviews == []
