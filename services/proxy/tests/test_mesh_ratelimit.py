"""Local rate limits (HTTPLocalRateLimitPolicy) as token buckets, with time injected."""

from __future__ import annotations

from gossamer_api.proxy import inbound_pb2, meta_pb2
from gossamer_proxy.mesh.authz import MetaLabels, compile_rate_limit, compile_server
from gossamer_proxy.mesh.ratelimit import LocalRateLimiter, RateLimitSpec, TokenBucket

META = MetaLabels("policy.linkerd.io", "HTTPLocalRateLimitPolicy", "web-rl")
A = "a.ns.serviceaccount.identity.gossamer.cluster.local"
B = "b.ns.serviceaccount.identity.gossamer.cluster.local"
VIP = "vip.ns.serviceaccount.identity.gossamer.cluster.local"
VIP2 = "vip2.ns.serviceaccount.identity.gossamer.cluster.local"


def test_bucket_allows_a_second_of_burst_then_refills_at_the_rate() -> None:
    bucket = TokenBucket(3, now=100.0)
    assert [bucket.try_take(100.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.try_take(100.2)  # 0.6 tokens so far
    assert bucket.try_take(100.34)  # 1.02 tokens
    assert not bucket.try_take(100.34)
    # Refill stops at the capacity: a long lull buys one second's burst, not more.
    assert [bucket.try_take(200.0) for _ in range(4)] == [True, True, True, False]
    # A clock that steps back refills nothing and breaks nothing.
    assert not bucket.try_take(150.0)
    assert bucket.is_full(201.0)


def test_total_then_override_else_identity() -> None:
    limiter = LocalRateLimiter(
        RateLimitSpec(META, total=12, identity=2, overrides=((3, frozenset({VIP, VIP2})),))
    )
    now = 5.0
    assert [limiter.check(A, now) is None for _ in range(3)] == [True, True, False]
    refusal = limiter.check(A, now)
    assert refusal is not None
    assert (refusal.scope, refusal.requests_per_second) == ("identity", 2)
    assert refusal.message == "per-identity rate limit exceeded: 2rps"
    # Each identity has its own budget; clients without one share a single budget.
    assert limiter.check(B, now) is None
    assert [limiter.check(None, now) is None for _ in range(3)] == [True, True, False]
    # An override replaces the identity limit, and its identities share one bucket.
    assert [limiter.check(VIP, now) is None for _ in range(2)] == [True, True]
    assert limiter.check(VIP2, now) is None
    over = limiter.check(VIP2, now)
    assert over is not None
    assert (over.scope, over.requests_per_second) == ("override", 3)
    # Every request so far took a total token (12): the total now refuses everyone.
    total = limiter.check(B, now)
    assert total is not None
    assert total.scope == "total"
    assert total.message == "total rate limit exceeded: 12rps"
    assert limiter.check(B, now + 0.1) is None  # a token back after 0.1 s at 12/s


def test_identity_buckets_are_bounded() -> None:
    limiter = LocalRateLimiter(RateLimitSpec(META, identity=1), max_identities=3)
    for i in range(10):
        assert limiter.check(f"c{i}.ns", 0.0) is None
    assert limiter.tracked_identities() == 3
    assert limiter.check("c9.ns", 0.0) is not None  # recent ones are remembered


def _rate_limit_message() -> inbound_pb2.HttpLocalRateLimit:
    message = inbound_pb2.HttpLocalRateLimit(
        metadata=meta_pb2.Metadata(
            resource=meta_pb2.Resource(
                group="policy.linkerd.io", kind="HTTPLocalRateLimitPolicy", name="web-rl"
            )
        ),
        total=inbound_pb2.HttpLocalRateLimit.Limit(requestsPerSecond=100),
        identity=inbound_pb2.HttpLocalRateLimit.Limit(requestsPerSecond=0),
    )
    override = message.overrides.add()
    override.limit.requestsPerSecond = 5
    override.clients.identities.add(name=VIP)
    return message


def test_compile_rate_limit_and_server() -> None:
    spec = compile_rate_limit(_rate_limit_message())
    assert spec == RateLimitSpec(META, total=100, identity=None, overrides=((5, frozenset({VIP})),))
    assert compile_rate_limit(inbound_pb2.HttpLocalRateLimit()) is None

    server = inbound_pb2.Server()
    server.labels.update({"group": "policy.linkerd.io", "kind": "server", "name": "web"})
    server.protocol.http1.local_rate_limit.CopyFrom(_rate_limit_message())
    policy = compile_server(server)
    assert policy.rate_limit is not None
    assert policy.rate_limit.spec == spec
    detect = inbound_pb2.Server()
    detect.protocol.detect.http_local_rate_limit.CopyFrom(_rate_limit_message())
    assert compile_server(detect).rate_limit is not None
    plain = inbound_pb2.Server()
    plain.protocol.detect.SetInParent()
    assert compile_server(plain).rate_limit is None


def test_a_rate_limit_change_is_a_policy_change() -> None:
    """The watch keeps the policy in force when an update compares equal: a new or changed
    rate limit must not compare equal, while the same limit keeps its buckets."""
    plain = inbound_pb2.Server()
    plain.protocol.http1.SetInParent()
    limited = inbound_pb2.Server()
    limited.protocol.http1.local_rate_limit.CopyFrom(_rate_limit_message())
    assert compile_server(plain) != compile_server(limited)
    assert compile_server(limited) == compile_server(limited)
    other = inbound_pb2.Server()
    other.CopyFrom(limited)
    other.protocol.http1.local_rate_limit.total.requestsPerSecond = 7
    assert compile_server(other) != compile_server(limited)
