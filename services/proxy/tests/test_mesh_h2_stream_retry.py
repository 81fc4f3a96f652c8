"""Per-stream retry decisions, HTTP/2 policy routing and the upstream pool (pure logic)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from google.protobuf.duration_pb2 import Duration
from gossamer_api.proxy import destination_pb2, grpc_route_pb2, http_route_pb2, outbound_pb2
from gossamer_proxy.config import Endpoint
from gossamer_proxy.http2.upstream_pool import UpstreamPool
from gossamer_proxy.mesh.classify import GrpcStatus
from gossamer_proxy.mesh.outbound_policy import compile_outbound_policy
from gossamer_proxy.mesh.policy_router import (
    attempt_timeout,
    h2_routes,
    policy_applies,
    route_request,
)
from gossamer_proxy.mesh.profile import compile_profile
from gossamer_proxy.mesh.request import RequestView
from gossamer_proxy.mesh.retry import RetryCondition, RetryVerdict
from gossamer_proxy.mesh.retry_budget import RetryBudget, RetryBudgetConfig
from gossamer_proxy.mesh.stream_retry import StreamRetry, response_head_status

# -- response heads ----------------------------------------------------------------------


def test_response_head_status_reads_status_and_trailers_only_grpc_status() -> None:
    assert response_head_status([(b":status", b"200"), (b"grpc-status", b"14")]) == (200, 14)
    assert response_head_status([(b":status", b"503")]) == (503, None)
    # Malformed values: no status is 0 (never a success); a bad grpc-status is UNKNOWN.
    assert response_head_status([(b":status", b"abc")]) == (0, None)
    assert response_head_status([(b":status", b"200"), (b"grpc-status", b"x")]) == (200, 2)


# -- profile routes ----------------------------------------------------------------------


def _profile_route(retryable: bool = True) -> StreamRetry:
    profile = compile_profile(
        destination_pb2.DestinationProfile(
            fully_qualified_name="web.ns.svc.cluster.local",
            routes=[
                destination_pb2.Route(
                    condition=destination_pb2.RequestMatch(
                        path=destination_pb2.PathMatch(regex=".*")
                    ),
                    is_retryable=retryable,
                )
            ],
        )
    )
    budget = RetryBudget(RetryBudgetConfig(retry_ratio=0.0, min_retries_per_second=1, ttl=2.0), 0)
    return StreamRetry(route=profile.routes[0], budget=budget)


def test_trailers_only_grpc_failure_is_retried_while_the_budget_lasts() -> None:
    retry = _profile_route()
    retry.body.end()
    head = {"status": 200, "grpc": int(GrpcStatus.UNAVAILABLE), "end_stream": True, "now": 1.0}
    assert retry.on_head(attempt=1, **head) is RetryVerdict.RETRY  # type: ignore[arg-type]
    assert retry.on_head(attempt=2, **head) is RetryVerdict.RETRY  # type: ignore[arg-type]
    # 1/s over a 2 s TTL: two tokens, then none.
    assert retry.on_head(attempt=3, **head) is RetryVerdict.NO_BUDGET  # type: ignore[arg-type]


def test_responses_with_a_body_or_success_are_never_retried() -> None:
    retry = _profile_route()
    retry.body.end()
    # A failed status whose body is still coming belongs to the client.
    assert (
        retry.on_head(attempt=1, status=503, grpc=None, end_stream=False, now=0.0)
        is RetryVerdict.NOT_RETRYABLE
    )
    assert (
        retry.on_head(attempt=1, status=200, grpc=0, end_stream=True, now=0.0)
        is RetryVerdict.NOT_RETRYABLE
    )
    assert (
        retry.on_head(attempt=1, status=100, grpc=None, end_stream=True, now=0.0)
        is RetryVerdict.NOT_RETRYABLE
    )


def test_a_body_over_the_limit_or_still_streaming_is_not_replayed() -> None:
    retry = _profile_route()
    retry.body.feed(b"x" * 1000)
    assert retry.on_error(attempt=1, now=0.0) is RetryVerdict.BODY_NOT_REPLAYABLE  # not ended
    retry.body.feed(b"y" * (64 * 1024))
    retry.body.end()
    assert retry.on_error(attempt=1, now=0.0) is RetryVerdict.BODY_NOT_REPLAYABLE


def test_resets_before_any_response_are_retried() -> None:
    retry = _profile_route()
    retry.body.feed(b"abc")
    retry.body.end()
    assert retry.on_error(attempt=1, now=0.0) is RetryVerdict.RETRY
    assert retry.body.chunks() == (b"abc",)


def test_stream_retry_needs_exactly_one_rule() -> None:
    with pytest.raises(ValueError, match="profile route or a policy condition"):
        StreamRetry()
    route = _profile_route().route
    with pytest.raises(ValueError, match="profile route or a policy condition"):
        StreamRetry(route=route, condition=RetryCondition())


# -- policy routes -----------------------------------------------------------------------


def test_policy_condition_retries_listed_grpc_codes_up_to_max_retries() -> None:
    condition = RetryCondition(max_retries=2, grpc_codes=frozenset({int(GrpcStatus.UNAVAILABLE)}))
    retry = StreamRetry(condition=condition, limit=10)
    retry.body.end()

    def head(attempt: int, grpc: int) -> RetryVerdict:
        return retry.on_head(attempt=attempt, status=200, grpc=grpc, end_stream=True, now=0.0)

    assert head(1, GrpcStatus.UNAVAILABLE) is RetryVerdict.RETRY
    assert head(2, GrpcStatus.UNAVAILABLE) is RetryVerdict.RETRY
    assert head(3, GrpcStatus.UNAVAILABLE) is RetryVerdict.EXHAUSTED
    assert head(1, GrpcStatus.NOT_FOUND) is RetryVerdict.NOT_RETRYABLE
    retry.body.feed(b"x" * 11)  # over this route's max_request_bytes
    assert head(1, GrpcStatus.UNAVAILABLE) is RetryVerdict.BODY_NOT_REPLAYABLE


def _seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


def _http_route(*weighted: tuple[str, int], default: bool = False) -> outbound_pb2.HttpRoute:
    route = outbound_pb2.HttpRoute()
    if default:
        route.metadata.default = "http"
    else:
        route.metadata.resource.kind = "HTTPRoute"
        route.metadata.resource.name = "r"
    rule = route.rules.add()
    rule.matches.append(http_route_pb2.HttpRouteMatch(path=http_route_pb2.PathMatch(prefix="/")))
    for path, weight in weighted:
        entry = rule.backends.random_available.backends.add(weight=weight)
        entry.backend.backend.balancer.discovery.dst.path = path
    return route


def _detect(
    http1: outbound_pb2.HttpRoute, http2: outbound_pb2.HttpRoute
) -> outbound_pb2.OutboundPolicy:
    message = outbound_pb2.OutboundPolicy()
    message.protocol.detect.timeout.CopyFrom(_seconds(10))
    message.protocol.detect.http1.routes.append(http1)
    message.protocol.detect.http2.routes.append(http2)
    return message


def _view(path: str = "/test.Echo/Unary") -> RequestView:
    return RequestView.from_target("POST", path, authority="web:80")


def test_detect_policy_routes_http2_by_its_http2_routes() -> None:
    policy = compile_outbound_policy(
        _detect(_http_route(("one:80", 1)), _http_route(("two:80", 1)))
    )
    assert policy_applies(None, policy, http2=True)
    decision = route_request(policy, _view(), random.Random(1), http2=True)
    assert decision.verdict == "backend"
    assert decision.backend is not None
    assert decision.backend.discovery_path == "two:80"


def test_grpc_policy_routes_by_grpc_routes() -> None:
    message = outbound_pb2.OutboundPolicy()
    route = message.protocol.grpc.routes.add()
    route.metadata.resource.kind = "GRPCRoute"
    route.metadata.resource.name = "g"
    rule = route.rules.add()
    rule.matches.append(
        grpc_route_pb2.GrpcRouteMatch(rpc=grpc_route_pb2.GrpcRpcMatch(service="test.Echo"))
    )
    entry = rule.backends.random_available.backends.add(weight=1)
    entry.backend.backend.balancer.discovery.dst.path = "echo:80"
    policy = compile_outbound_policy(message)
    assert len(h2_routes(policy)) == 1
    assert route_request(policy, _view(), random.Random(1), http2=True).verdict == "backend"
    assert (
        route_request(policy, _view("/other.Svc/M"), random.Random(1), http2=True).verdict
        == "no_route"
    )


def test_profile_routes_and_default_routes_leave_routing_to_the_profile() -> None:
    defaults = compile_outbound_policy(
        _detect(_http_route(("a:80", 1), default=True), _http_route(("a:80", 1), default=True))
    )
    assert not policy_applies(None, defaults, http2=True)
    assert not policy_applies(None, None, http2=True)
    resources = compile_outbound_policy(_detect(_http_route(("a:80", 1)), _http_route(("b:80", 1))))
    with_overrides = compile_profile(
        destination_pb2.DestinationProfile(
            fully_qualified_name="web.ns.svc.cluster.local",
            dst_overrides=[destination_pb2.WeightedDst(authority="c:80", weight=1)],
        )
    )
    assert not policy_applies(with_overrides, resources, http2=True)


def test_zero_weights_give_no_backend() -> None:
    policy = compile_outbound_policy(_detect(_http_route(("a:80", 0)), _http_route(("a:80", 0))))
    assert route_request(policy, _view(), random.Random(1), http2=True).verdict == "no_backend"


def test_timeouts_bound_the_request_and_with_retries_each_attempt() -> None:
    rule = outbound_pb2.HttpRoute.Rule()
    rule.timeouts.request.CopyFrom(_seconds(5))
    rule.timeouts.response.CopyFrom(_seconds(1))
    route = _http_route(("a:80", 1))
    route.rules[0].timeouts.CopyFrom(rule.timeouts)
    action = compile_outbound_policy(_detect(route, route)).http2_routes[0].rules[0].action
    assert action.request_timeout == 5.0  # the whole exchange
    assert attempt_timeout(action) == 1.0  # each attempt, until its response head
    route.rules[0].retry.max_retries = 2
    route.rules[0].retry.conditions.status_ranges.add(start=500, end=599)
    route.rules[0].retry.timeout.CopyFrom(_seconds(0.5))
    action = compile_outbound_policy(_detect(route, route)).http2_routes[0].rules[0].action
    assert action.request_timeout == 5.0
    assert attempt_timeout(action) == 0.5


# -- the upstream pool -------------------------------------------------------------------


@dataclass(eq=False)
class FakeConn:
    streams: int = 0
    open: bool = True
    closed: bool = False

    @property
    def busy(self) -> bool:
        return self.streams > 0

    def usable(self) -> bool:
        return self.open and self.streams < 2

    def close_when_idle(self) -> None:
        self.closed = True


def test_pool_hands_out_usable_connections_per_endpoint() -> None:
    pool: UpstreamPool[FakeConn] = UpstreamPool()
    a, b = (Endpoint("127.0.0.1", 1), None), (Endpoint("127.0.0.1", 2), None)
    first = FakeConn()
    pool.add(a, first)
    assert pool.usable(a) is first
    assert pool.usable(b) is None
    first.streams = 2  # at the server's concurrency limit
    assert pool.usable(a) is None
    second = FakeConn()
    pool.add(a, second)
    assert pool.usable(a) is second
    second.open = False  # GOAWAY'd
    assert pool.usable(a) is None
    pool.discard(second)
    assert pool.connections() == [first]


def test_pool_closes_connections_idle_for_the_timeout() -> None:
    pool: UpstreamPool[FakeConn] = UpstreamPool()
    key = (Endpoint("127.0.0.1", 1), None)
    idle, busy = FakeConn(), FakeConn(streams=1)
    pool.add(key, idle)
    pool.add(key, busy)
    pool.sweep(10.0, idle_timeout=5.0)  # idleness starts being measured now
    assert not idle.closed
    pool.sweep(14.9, idle_timeout=5.0)
    assert not idle.closed
    pool.sweep(15.0, idle_timeout=5.0)
    assert idle.closed
    assert not busy.closed
    assert pool.connections() == [busy]
    pool.close_all()
    assert busy.closed
    assert len(pool) == 0
