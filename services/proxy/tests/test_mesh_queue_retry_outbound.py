"""Fail-fast queue, retry decisions, and compiling outbound policies (traffic split)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from google.protobuf.duration_pb2 import Duration
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import (
    destination_pb2,
    grpc_route_pb2,
    http_route_pb2,
    meta_pb2,
    outbound_pb2,
)
from gossamer_proxy.mesh.accrual import SuccessRate, UnifiedAccrual
from gossamer_proxy.mesh.classify import Classification
from gossamer_proxy.mesh.outbound_policy import OutboundPolicyError, compile_outbound_policy
from gossamer_proxy.mesh.queue import Admission, FailFastQueue, QueueState
from gossamer_proxy.mesh.request import RequestView
from gossamer_proxy.mesh.retry import ReplayBody, RetryCondition, RetryVerdict, decide_retry
from gossamer_proxy.mesh.retry_budget import RetryBudget, RetryBudgetConfig
from gossamer_proxy.mesh.routes import find_route

# --- queue -----------------------------------------------------------------------------------


def test_queue_dispatches_while_ready_and_drains_when_ready_again() -> None:
    queue: FailFastQueue[str] = FailFastQueue(capacity=2, failfast_timeout=3.0)
    assert queue.offer("a", 0.0) is Admission.DISPATCH
    queue.set_ready(False, 1.0)
    assert queue.offer("b", 1.0) is Admission.QUEUED
    assert queue.offer("c", 1.5) is Admission.QUEUED
    assert queue.offer("d", 1.5) is Admission.LOAD_SHED  # 503
    assert queue.next_deadline() == 4.0
    update = queue.set_ready(True, 2.0)
    assert update.dispatch == ("b", "c")
    assert queue.state is QueueState.READY


def test_queue_enters_failfast_after_timeout_and_recovers() -> None:
    queue: FailFastQueue[str] = FailFastQueue(capacity=10, failfast_timeout=3.0)
    queue.set_ready(False, 0.0)
    queue.offer("a", 0.5)
    queue.offer("b", 2.9)
    assert queue.poll(2.99).failed == ()
    assert queue.poll(3.0).failed == ("a", "b")  # 504
    assert queue.offer("c", 3.1) is Admission.FAIL_FAST
    queue.set_ready(True, 4.0)
    assert queue.offer("d", 4.0) is Admission.DISPATCH


def test_queue_withdraw_and_validation() -> None:
    queue: FailFastQueue[str] = FailFastQueue()
    queue.set_ready(False, 0.0)
    queue.offer("a", 0.0)
    assert queue.withdraw("a")
    assert not queue.withdraw("a")
    with pytest.raises(ValueError, match="capacity"):
        FailFastQueue(capacity=-1)


# --- retries ---------------------------------------------------------------------------------


def body(data: bytes, limit: int = 10, complete: bool = True) -> ReplayBody:
    replay = ReplayBody(limit)
    replay.feed(data)
    if complete:
        replay.end()
    return replay


def test_replay_body_limits() -> None:
    assert body(b"12345").chunks() == (b"12345",)
    assert not body(b"12345678901").replayable
    assert not body(b"123", complete=False).replayable
    with pytest.raises(RuntimeError, match="cannot be replayed"):
        body(b"12345678901").chunks()


def test_profile_retries_need_failure_budget_and_replayable_body() -> None:
    budget = RetryBudget(RetryBudgetConfig(0.0, 1, 1.0), 0.0)  # one retry in reserve
    failure, success = Classification.FAILURE, Classification.SUCCESS
    assert (
        decide_retry(attempt=1, body=body(b"x"), now=0.0, profile_failure=success, budget=budget)
        is RetryVerdict.NOT_RETRYABLE
    )
    assert (
        decide_retry(
            attempt=1, body=body(b"x" * 20), now=0.0, profile_failure=failure, budget=budget
        )
        is RetryVerdict.BODY_NOT_REPLAYABLE
    )
    assert (
        decide_retry(attempt=1, body=body(b"x"), now=0.0, profile_failure=failure, budget=budget)
        is RetryVerdict.RETRY
    )
    assert (
        decide_retry(attempt=2, body=body(b"x"), now=0.0, profile_failure=failure, budget=budget)
        is RetryVerdict.NO_BUDGET
    )


def test_policy_retry_conditions_and_limits() -> None:
    http = RetryCondition(max_retries=2, status_ranges=((502, 504),))
    assert (
        decide_retry(attempt=1, body=None, now=0, condition=http, status=503) is RetryVerdict.RETRY
    )
    assert (
        decide_retry(attempt=1, body=None, now=0, condition=http, status=500)
        is RetryVerdict.NOT_RETRYABLE
    )
    assert (
        decide_retry(attempt=3, body=None, now=0, condition=http, status=503)
        is RetryVerdict.EXHAUSTED
    )
    assert (
        decide_retry(attempt=1, body=None, now=0, condition=http, error=True) is RetryVerdict.RETRY
    )
    grpc = RetryCondition(max_retries=1, status_ranges=(), grpc_codes=frozenset({14}))
    assert (
        decide_retry(attempt=1, body=None, now=0, condition=grpc, status=200, grpc=14)
        is RetryVerdict.RETRY
    )
    assert (
        decide_retry(attempt=1, body=None, now=0, condition=grpc, status=200, grpc=13)
        is RetryVerdict.NOT_RETRYABLE
    )
    assert decide_retry(attempt=1, body=None, now=0) is RetryVerdict.NOT_RETRYABLE


# --- outbound policy -------------------------------------------------------------------------


def backend(name: str) -> outbound_pb2.Backend:
    return outbound_pb2.Backend(
        metadata=meta_pb2.Metadata(
            resource=meta_pb2.Resource(group="core", kind="Service", name=name)
        ),
        balancer=outbound_pb2.Backend.BalanceP2c(
            discovery=outbound_pb2.Backend.EndpointDiscovery(
                dst=outbound_pb2.Backend.EndpointDiscovery.DestinationGet(
                    path=f"{name}.ns.svc.cluster.local:80"
                )
            ),
            peak_ewma=outbound_pb2.Backend.BalanceP2c.PeakEwma(
                default_rtt=Duration(nanos=30_000_000), decay=Duration(seconds=10)
            ),
        ),
        queue=outbound_pb2.Queue(capacity=100, failfast_timeout=Duration(seconds=3)),
    )


def weighted(*pairs: tuple[str, int]) -> outbound_pb2.HttpRoute.Distribution:
    route_type = outbound_pb2.HttpRoute
    return route_type.Distribution(
        random_available=route_type.Distribution.RandomAvailable(
            backends=[
                route_type.WeightedRouteBackend(
                    backend=route_type.RouteBackend(backend=backend(n)), weight=w
                )
                for n, w in pairs
            ]
        )
    )


def canary_policy() -> outbound_pb2.OutboundPolicy:
    route_type = outbound_pb2.HttpRoute
    canary_rule = route_type.Rule(
        matches=[
            http_route_pb2.HttpRouteMatch(
                headers=[http_route_pb2.HeaderMatch(name="x-user", exact=b"tester")]
            )
        ],
        backends=weighted(("web-v2", 1)),
    )
    split_rule = route_type.Rule(
        matches=[http_route_pb2.HttpRouteMatch(path=http_route_pb2.PathMatch(prefix="/"))],
        backends=weighted(("web-v1", 90), ("web-v2", 10)),
        timeouts=http_route_pb2.Timeouts(request=Duration(seconds=2), response=Duration(seconds=1)),
        retry=route_type.Retry(
            max_retries=3,
            conditions=route_type.Retry.Conditions(
                status_ranges=[route_type.Retry.Conditions.StatusRange(start=502, end=504)]
            ),
        ),
        allow_l5d_request_headers=True,
    )
    http1 = outbound_pb2.ProxyProtocol.Http1(
        routes=[
            route_type(
                metadata=meta_pb2.Metadata(
                    resource=meta_pb2.Resource(
                        group="policy.linkerd.io", kind="HTTPRoute", name="web"
                    )
                ),
                rules=[canary_rule, split_rule],
            )
        ],
        failure_accrual=outbound_pb2.FailureAccrual(
            consecutive_failures=outbound_pb2.FailureAccrual.ConsecutiveFailures(
                max_failures=7,
                backoff=outbound_pb2.ExponentialBackoff(
                    min_backoff=Duration(seconds=1),
                    max_backoff=Duration(seconds=60),
                    jitter_ratio=0.5,
                ),
            )
        ),
    )
    return outbound_pb2.OutboundPolicy(
        protocol=outbound_pb2.ProxyProtocol(
            detect=outbound_pb2.ProxyProtocol.Detect(
                timeout=Duration(seconds=10),
                http1=http1,
                http2=outbound_pb2.ProxyProtocol.Http2(routes=http1.routes),
            )
        ),
        metadata=meta_pb2.Metadata(
            resource=meta_pb2.Resource(group="core", kind="Service", name="web", port=80)
        ),
    )


def test_canary_header_match_and_weighted_backend_split() -> None:
    policy = compile_outbound_policy(canary_policy())
    assert policy.protocol == "detect"
    assert policy.detect_timeout == 10.0
    assert policy.failure_accrual is not None
    assert policy.failure_accrual.max_failures == 7
    tester = RequestView.from_target("GET", "/", headers=[(b"x-user", b"tester")])
    found = find_route(policy.http1_routes, tester)
    assert found is not None
    (only,) = found[1].action.backends.backends
    assert only.meta.name == "web-v2"
    anyone = find_route(policy.http1_routes, RequestView.from_target("GET", "/x"))
    assert anyone is not None
    action = anyone[1].action
    assert action.meta.name == "web"
    assert (action.request_timeout, action.response_timeout) == (2.0, 1.0)
    assert action.retry == RetryCondition(max_retries=3, status_ranges=((502, 504),))
    assert action.allow_l5d_request_headers
    rng = random.Random(5)
    counts = Counter(action.backends.choose(rng).meta.name for _ in range(1000))  # type: ignore[union-attr]
    assert 820 < counts["web-v1"] < 970
    spec = action.backends.backends[0]
    assert spec.discovery_path == "web-v1.ns.svc.cluster.local:80"
    assert spec.default_rtt == pytest.approx(0.03)


def test_grpc_routes_and_forward_backends() -> None:
    route_type = outbound_pb2.GrpcRoute
    forward = outbound_pb2.Backend(
        forward=destination_pb2.WeightedAddr(addr=tcp_address_to_proto("10.1.0.9", 9090), weight=1)
    )
    policy = compile_outbound_policy(
        outbound_pb2.OutboundPolicy(
            protocol=outbound_pb2.ProxyProtocol(
                grpc=outbound_pb2.ProxyProtocol.Grpc(
                    routes=[
                        route_type(
                            rules=[
                                route_type.Rule(
                                    matches=[
                                        grpc_route_pb2.GrpcRouteMatch(
                                            rpc=grpc_route_pb2.GrpcRpcMatch(service="svc.Users")
                                        )
                                    ],
                                    backends=route_type.Distribution(
                                        first_available=route_type.Distribution.FirstAvailable(
                                            backends=[route_type.RouteBackend(backend=forward)]
                                        )
                                    ),
                                    retry=route_type.Retry(
                                        max_retries=2,
                                        conditions=route_type.Retry.Conditions(unavailable=True),
                                    ),
                                )
                            ]
                        )
                    ]
                )
            )
        )
    )
    found = find_route(policy.grpc_routes, RequestView.from_target("POST", "/svc.Users/Get"))
    assert found is not None
    action = found[1].action
    assert action.distribution == "first_available"
    assert action.ordered_backends[0].forward is not None
    assert str(action.ordered_backends[0].forward.ip) == "10.1.0.9"
    assert action.retry is not None
    assert action.retry.grpc_codes == frozenset({14})
    assert find_route(policy.grpc_routes, RequestView.from_target("POST", "/svc.Other/Get")) is None


def test_bad_outbound_policies_are_rejected() -> None:
    with pytest.raises(OutboundPolicyError, match="no protocol"):
        compile_outbound_policy(outbound_pb2.OutboundPolicy())
    bad = canary_policy()
    bad.protocol.detect.http1.routes[0].rules[0].matches[0].headers[0].ClearField("exact")
    with pytest.raises(OutboundPolicyError, match="route 'web'"):
        compile_outbound_policy(bad)
    no_path = canary_policy()
    rule = no_path.protocol.detect.http1.routes[0].rules[1]
    rule.backends.random_available.backends[0].backend.backend.balancer.discovery.dst.path = ""
    with pytest.raises(OutboundPolicyError, match="no discovery path"):
        compile_outbound_policy(no_path)
    bad_range = canary_policy()
    retry = bad_range.protocol.detect.http1.routes[0].rules[1].retry
    retry.conditions.status_ranges[0].start = 42
    with pytest.raises(OutboundPolicyError, match="status range"):
        compile_outbound_policy(bad_range)


def _with_accrual(accrual: outbound_pb2.FailureAccrual) -> outbound_pb2.OutboundPolicy:
    message = canary_policy()
    message.protocol.detect.http1.failure_accrual.CopyFrom(accrual)
    return message


def test_unified_failure_accrual_compiles_to_a_success_rate_accrual() -> None:
    unified = outbound_pb2.FailureAccrual(
        unified=outbound_pb2.FailureAccrual.Unified(
            success_rate_threshold=0.9,
            decay=Duration(seconds=30),
            min_requests=20,
            max_consecutive_failures=5,
        )
    )
    spec = compile_outbound_policy(_with_accrual(unified)).failure_accrual
    assert spec is not None
    assert spec.max_failures == 5
    assert spec.success_rate == SuccessRate(threshold=0.9, decay=30.0, min_requests=20)
    assert isinstance(spec.new(), UnifiedAccrual)


def test_an_invalid_success_rate_keeps_only_the_consecutive_half() -> None:
    unified = outbound_pb2.FailureAccrual(
        unified=outbound_pb2.FailureAccrual.Unified(
            success_rate_threshold=1.5, decay=Duration(seconds=30), max_consecutive_failures=5
        )
    )
    spec = compile_outbound_policy(_with_accrual(unified)).failure_accrual
    assert spec is not None
    assert spec.success_rate is None
    accrual = spec.new()
    assert not isinstance(accrual, UnifiedAccrual)
    assert accrual.consecutive_failures == 0
