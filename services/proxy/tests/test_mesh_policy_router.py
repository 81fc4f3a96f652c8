"""Routing outbound requests by an OutboundPolicy's HTTPRoutes (pure logic)."""

from __future__ import annotations

import json
import random

from google.protobuf.duration_pb2 import Duration
from gossamer_api.proxy import http_route_pb2, outbound_pb2
from gossamer_proxy.mesh.outbound_policy import compile_outbound_policy
from gossamer_proxy.mesh.policy_router import (
    route_request,
    routes_from_resources,
    source_workload,
)
from gossamer_proxy.mesh.request import RequestView


def _backend(path: str) -> outbound_pb2.Backend:
    backend = outbound_pb2.Backend()
    backend.balancer.discovery.dst.path = path
    return backend


def _rule(
    *weighted: tuple[str, int],
    prefix: str = "/",
    method: int | None = None,
    request_timeout: float | None = None,
    response_timeout: float | None = None,
) -> outbound_pb2.HttpRoute.Rule:
    rule = outbound_pb2.HttpRoute.Rule()
    match = http_route_pb2.HttpRouteMatch()
    match.path.prefix = prefix
    if method is not None:
        match.method.registered = method  # type: ignore[assignment]
    rule.matches.append(match)
    for path, weight in weighted:
        rule.backends.random_available.backends.add(
            weight=weight, backend=outbound_pb2.HttpRoute.RouteBackend(backend=_backend(path))
        )
    if request_timeout is not None:
        rule.timeouts.request.CopyFrom(Duration(nanos=int(request_timeout * 1e9)))
    if response_timeout is not None:
        rule.timeouts.response.CopyFrom(Duration(nanos=int(response_timeout * 1e9)))
    return rule


def _policy(
    *rules: outbound_pb2.HttpRoute.Rule, default: bool = False
) -> outbound_pb2.OutboundPolicy:
    route = outbound_pb2.HttpRoute(rules=list(rules))
    if default:
        route.metadata.default = "http"
    else:
        route.metadata.resource.kind = "HTTPRoute"
        route.metadata.resource.name = "r"
    message = outbound_pb2.OutboundPolicy()
    message.protocol.http1.routes.append(route)
    message.protocol.http1.failure_accrual.consecutive_failures.max_failures = 4
    return message


def _get(path: str) -> RequestView:
    return RequestView.from_target("GET", path, authority="web.ns.svc.cluster.local:80")


def test_only_httproute_resources_take_over_routing() -> None:
    assert routes_from_resources(compile_outbound_policy(_policy(_rule(("a:80", 1)))))
    default = compile_outbound_policy(_policy(_rule(("a:80", 1)), default=True))
    assert not routes_from_resources(default)
    assert not routes_from_resources(None)
    opaque = outbound_pb2.OutboundPolicy()
    opaque.protocol.opaque.routes.add()
    assert not routes_from_resources(compile_outbound_policy(opaque))


def test_most_specific_rule_wins_and_carries_timeout_and_accrual() -> None:
    policy = compile_outbound_policy(
        _policy(
            _rule(("a:80", 1)),
            _rule(("b:80", 1), prefix="/api", request_timeout=2.0, response_timeout=0.5),
            _rule(("c:80", 1), prefix="/api", method=1),  # POST
        )
    )
    rng = random.Random(1)
    plain = route_request(policy, _get("/x"), rng)
    assert plain.verdict == "backend"
    assert plain.backend is not None
    assert plain.backend.discovery_path == "a:80"
    assert plain.timeout is None
    api = route_request(policy, _get("/api/v1"), rng)
    assert api.backend is not None
    assert api.backend.discovery_path == "b:80"
    assert api.timeout == 0.5
    assert api.accrual is not None
    assert api.accrual.max_failures == 4
    post = route_request(policy, RequestView.from_target("POST", "/api"), rng)
    assert post.backend is not None
    assert post.backend.discovery_path == "c:80"


def test_weights_split_traffic_in_proportion() -> None:
    policy = compile_outbound_policy(_policy(_rule(("a:80", 3), ("b:80", 1))))
    rng = random.Random(7)
    picks = [route_request(policy, _get("/"), rng).backend for _ in range(4000)]
    share = sum(1 for p in picks if p is not None and p.discovery_path == "b:80") / 4000
    assert 0.22 <= share <= 0.28


def test_no_match_and_zero_weights_are_distinct_failures() -> None:
    policy = compile_outbound_policy(
        _policy(_rule(("a:80", 1), prefix="/api"), _rule(("b:80", 0), prefix="/off"))
    )
    rng = random.Random(0)
    assert route_request(policy, _get("/other"), rng).verdict == "no_route"
    off = route_request(policy, _get("/off"), rng)
    assert (off.verdict, off.backend) == ("no_backend", None)


def test_source_workload_prefers_the_policy_workload() -> None:
    assert source_workload('{"ns":"a","pod":"p"}', '{"ns":"b"}') == '{"ns":"a","pod":"p"}'
    derived = source_workload("", '{"ns":"emojivoto","nodeName":"n1","pod":"web-0"}')
    assert json.loads(derived) == {"ns": "emojivoto", "pod": "web-0"}


def test_source_workload_from_a_bad_context_is_empty() -> None:
    assert source_workload("", "") == ""
    assert source_workload("", "{not json") == ""
    assert source_workload("", '["ns"]') == ""
    assert source_workload("", '{"ns": 3}') == ""
