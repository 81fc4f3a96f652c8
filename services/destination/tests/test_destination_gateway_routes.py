"""Gateway API HTTPRoute/GRPCRoute and retry/timeout annotations, compiled to policy (pure)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gossamer_destination import route_tuning
from gossamer_destination import testing as t
from gossamer_destination.policy_inbound import PolicyLookups, inbound_server
from gossamer_destination.policy_outbound import service_policy
from gossamer_destination.profiles import Issues
from gossamer_destination.settings import DestinationSettings

SETTINGS = DestinationSettings()
GW = "gateway.networking.k8s.io/v1"
SVC_PARENT = {"group": "core", "kind": "Service", "name": "web", "port": 80}


def lookups(*objs: dict[str, Any]) -> PolicyLookups:
    def of(kind: str, ns: str) -> list[dict[str, Any]]:
        return [o for o in objs if o["kind"] == kind and o["metadata"]["namespace"] == ns]

    return PolicyLookups(
        namespace=lambda n: None,
        servers=lambda ns: of("Server", ns),
        authorization_policies=lambda ns: of("AuthorizationPolicy", ns),
        meshtls_authentication=lambda ns, n: None,
        network_authentication=lambda ns, n: None,
        http_routes=lambda ns: of("HTTPRoute", ns),
        server_authorizations=lambda ns: [],
        rate_limit_policies=lambda ns: [],
        grpc_routes=lambda ns: of("GRPCRoute", ns),
    )


def route(
    kind: str,
    name: str,
    spec: dict[str, Any],
    *,
    annotations: dict[str, str] | None = None,
    api_version: str = GW,
    ts: str = "2026-01-01T00:00:00Z",
) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "ns",
            "creationTimestamp": ts,
            "annotations": annotations or {},
        },
        "spec": spec,
    }


def svc(**annotations: str) -> dict[str, Any]:
    s = t.service("web")
    s["metadata"]["annotations"] = annotations
    return s


def outbound(service: dict[str, Any], *objs: dict[str, Any], **kw: Any) -> Any:
    issues = kw.pop("issues", Issues())
    settings = kw.pop("settings", SETTINGS)
    exists = kw.pop("exists", lambda ns, n: True)
    return service_policy(service, 80, lookups(*objs), exists, settings, issues)


# -- HTTPRoute (gateway.networking.k8s.io/v1) on a Service ---------------------------------------


def test_gateway_httproute_matches_filters_weights_and_timeouts() -> None:
    r = route(
        "HTTPRoute",
        "split",
        {
            "parentRefs": [SVC_PARENT],
            "hostnames": ["*.example.com"],
            "rules": [
                {
                    "matches": [
                        {
                            "path": {"type": "PathPrefix", "value": "/api"},
                            "headers": [{"name": "x-canary", "value": "1"}],
                            "method": "GET",
                        }
                    ],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"set": [{"name": "x-a", "value": "b"}]},
                        },
                        {
                            "type": "ResponseHeaderModifier",
                            "responseHeaderModifier": {"remove": ["server"]},
                        },
                    ],
                    "backendRefs": [
                        {"name": "web-v1", "port": 80, "weight": 80},
                        {"name": "web-v2", "port": 8080, "weight": 20},
                    ],
                    "timeouts": {"request": "5s", "backendRequest": "2s"},
                }
            ],
        },
    )
    issues = Issues()
    out = outbound(svc(), r, issues=issues, exists=lambda ns, n: n != "web-v2")
    assert issues.messages == []
    (http,) = out.protocol.detect.http1.routes
    assert out.protocol.detect.http2.routes[0] == http
    assert http.metadata.resource.group == "gateway.networking.k8s.io"
    assert http.metadata.resource.kind == "HTTPRoute"
    assert list(http.hosts[0].suffix.reverse_labels) == ["com", "example"]
    (rule,) = http.rules
    assert rule.matches[0].path.prefix == "/api"
    assert rule.matches[0].headers[0].exact == b"1"
    assert rule.matches[0].method.registered == 0  # GET
    assert rule.filters[0].request_header_modifier.set.headers[0].name == "x-a"
    assert list(rule.filters[1].response_header_modifier.remove) == ["server"]
    backends = rule.backends.random_available.backends
    assert [b.weight for b in backends] == [80, 20]
    assert backends[1].backend.backend.balancer.discovery.dst.path == (
        "web-v2.ns.svc.cluster.local:8080"
    )
    assert backends[1].backend.filters[0].failure_injector.status == 500
    assert rule.timeouts.request.seconds == 5
    assert rule.timeouts.response.seconds == 2
    assert not rule.HasField("retry")
    assert rule.allow_l5d_request_headers is False


def test_routes_of_both_groups_apply_oldest_first() -> None:
    newer = route("HTTPRoute", "b", {"parentRefs": [SVC_PARENT]}, ts="2026-02-01T00:00:00Z")
    older = route(
        "HTTPRoute",
        "a",
        {"parentRefs": [SVC_PARENT]},
        api_version="policy.linkerd.io/v1beta3",
        ts="2026-01-01T00:00:00Z",
    )
    out = outbound(svc(), newer, older)
    names = [
        (r.metadata.resource.group, r.metadata.resource.name)
        for r in out.protocol.detect.http1.routes
    ]
    assert names == [("policy.linkerd.io", "a"), ("gateway.networking.k8s.io", "b")]


def test_route_for_another_port_or_service_does_not_attach() -> None:
    other_port = route("HTTPRoute", "p", {"parentRefs": [{**SVC_PARENT, "port": 81}]})
    other_svc = route("HTTPRoute", "s", {"parentRefs": [{**SVC_PARENT, "name": "db"}]})
    gateway = route("HTTPRoute", "g", {"parentRefs": [{"name": "web"}]})  # kind Gateway
    out = outbound(svc(), other_port, other_svc, gateway)
    assert out.protocol.detect.http1.routes[0].metadata.default == "http"


# -- GRPCRoute on a Service --------------------------------------------------------------------


def grpc_route(annotations: dict[str, str] | None = None, **rule: Any) -> dict[str, Any]:
    return route(
        "GRPCRoute",
        "rpc",
        {
            "parentRefs": [SVC_PARENT],
            "rules": [
                {
                    "matches": [
                        {
                            "method": {"service": "echo.Echo", "method": "Say"},
                            "headers": [{"name": "x-tenant", "value": "a"}],
                        }
                    ],
                    **rule,
                }
            ],
        },
        annotations=annotations,
    )


def test_grpcroute_makes_the_service_grpc_with_rpc_matches_and_status_retries() -> None:
    r = grpc_route(
        {
            route_tuning.RETRY_GRPC: "cancelled, deadline-exceeded,unavailable",
            route_tuning.RETRY_LIMIT: "3",
            route_tuning.RETRY_TIMEOUT: "250ms",
            route_tuning.TIMEOUT_REQUEST: "2s",
        },
        backendRefs=[{"name": "echo-a", "port": 80, "weight": 1}, {"name": "gone", "port": 80}],
    )
    issues = Issues()
    out = outbound(svc(), r, issues=issues, exists=lambda ns, n: n != "gone")
    assert issues.messages == []
    assert out.protocol.WhichOneof("kind") == "grpc"
    (grpc,) = out.protocol.grpc.routes
    assert grpc.metadata.resource.kind == "GRPCRoute"
    (rule,) = grpc.rules
    assert rule.matches[0].rpc.service == "echo.Echo"
    assert rule.matches[0].rpc.method == "Say"
    assert rule.matches[0].headers[0].name == "x-tenant"
    conditions = rule.retry.conditions
    assert (conditions.cancelled, conditions.deadine_exceeded, conditions.unavailable) == (
        True,
        True,
        True,
    )
    assert not conditions.internal
    assert not conditions.resource_exhausted
    assert rule.retry.max_retries == 3
    assert rule.retry.timeout.ToMilliseconds() == 250
    assert rule.retry.max_request_bytes == 64 * 1024
    assert rule.timeouts.request.seconds == 2
    missing = rule.backends.random_available.backends[1].backend.filters[0].failure_injector
    assert missing.code == 14  # UNAVAILABLE


def test_grpcroute_without_matches_matches_every_rpc_and_regex_is_rejected() -> None:
    r = route("GRPCRoute", "all", {"parentRefs": [SVC_PARENT], "rules": [{}]})
    out = outbound(svc(), r)
    assert out.protocol.grpc.routes[0].rules[0].matches[0].rpc.service == ""
    bad = route(
        "GRPCRoute",
        "bad",
        {
            "parentRefs": [SVC_PARENT],
            "rules": [{"matches": [{"method": {"type": "RegularExpression", "service": "a.*"}}]}],
        },
    )
    issues = Issues()
    out = outbound(svc(), bad, issues=issues)
    assert out.protocol.WhichOneof("kind") == "detect"
    assert "GRPCRoute ns/bad skipped" in issues.messages[0]


def test_appprotocol_http_keeps_http_despite_grpcroutes() -> None:
    s = t.service("web", ports=[{"port": 80, "appProtocol": "http"}])
    out = outbound(s, grpc_route())
    assert out.protocol.WhichOneof("kind") == "http1"


# -- annotations and precedence ----------------------------------------------------------------


def test_service_annotations_tune_the_default_route() -> None:
    s = svc(
        **{
            route_tuning.RETRY_HTTP: "gateway-error,429",
            route_tuning.RETRY_LIMIT: "2",
            route_tuning.TIMEOUT_RESPONSE: "1s",
            route_tuning.TIMEOUT_IDLE: "1m",
        }
    )
    (rule,) = outbound(s).protocol.detect.http1.routes[0].rules
    ranges = [(r.start, r.end) for r in rule.retry.conditions.status_ranges]
    assert ranges == [(502, 504), (429, 429)]
    assert rule.retry.max_retries == 2
    assert not rule.retry.HasField("timeout")
    assert rule.timeouts.response.seconds == 1
    assert rule.timeouts.idle.seconds == 60
    assert not rule.timeouts.HasField("request")


def test_route_annotations_replace_the_service_groups_separately() -> None:
    s = svc(
        **{
            route_tuning.RETRY_HTTP: "5xx",
            route_tuning.RETRY_LIMIT: "4",
            route_tuning.TIMEOUT_REQUEST: "9s",
        }
    )
    own_retry = route(
        "HTTPRoute",
        "r",
        {"parentRefs": [SVC_PARENT]},
        annotations={route_tuning.RETRY_TIMEOUT: "100ms"},
    )
    (rule,) = outbound(s, own_retry).protocol.detect.http1.routes[0].rules
    # The route's retry group replaces the Service's entirely: limit back to 1, 5xx default.
    assert rule.retry.max_retries == 1
    assert rule.retry.timeout.ToMilliseconds() == 100
    assert [(r.start, r.end) for r in rule.retry.conditions.status_ranges] == [(500, 599)]
    # No timeout annotation on the route: the Service's timeouts still apply.
    assert rule.timeouts.request.seconds == 9


def test_spec_timeouts_yield_to_route_annotations_but_beat_the_service() -> None:
    spec = {"parentRefs": [SVC_PARENT], "rules": [{"timeouts": {"request": "3s"}}]}
    s = svc(**{route_tuning.TIMEOUT_REQUEST: "9s", route_tuning.TIMEOUT_IDLE: "30s"})
    plain = route("HTTPRoute", "r", spec)
    (rule,) = outbound(s, plain).protocol.detect.http1.routes[0].rules
    assert rule.timeouts.request.seconds == 3
    assert rule.timeouts.idle.seconds == 30
    annotated = route("HTTPRoute", "r", spec, annotations={route_tuning.TIMEOUT_REQUEST: "7s"})
    (rule,) = outbound(s, annotated).protocol.detect.http1.routes[0].rules
    assert rule.timeouts.request.seconds == 7
    assert not rule.timeouts.HasField("idle")


def test_service_grpc_retry_applies_to_grpcroutes_without_their_own() -> None:
    s = svc(**{route_tuning.RETRY_GRPC: "unavailable", route_tuning.RETRY_HTTP: "5xx"})
    (rule,) = outbound(s, grpc_route()).protocol.grpc.routes[0].rules
    assert rule.retry.conditions.unavailable
    assert not rule.retry.conditions.cancelled


def test_wrong_retry_annotation_for_the_route_kind_is_reported() -> None:
    r = grpc_route({route_tuning.RETRY_HTTP: "5xx", route_tuning.RETRY_LIMIT: "2"})
    issues = Issues()
    (rule,) = outbound(svc(), r, issues=issues).protocol.grpc.routes[0].rules
    assert "not valid on a GRPCRoute" in issues.messages[0]
    # No gRPC condition given: every retryable status code.
    c = rule.retry.conditions
    assert all((c.cancelled, c.deadine_exceeded, c.resource_exhausted, c.internal, c.unavailable))


@pytest.mark.parametrize(
    "annotations",
    [
        {route_tuning.RETRY_HTTP: "5xx,600"},
        {route_tuning.RETRY_HTTP: "504-500"},
        {route_tuning.RETRY_LIMIT: "-1"},
        {route_tuning.RETRY_LIMIT: "lots"},
        {route_tuning.RETRY_TIMEOUT: "10"},
        {route_tuning.RETRY_GRPC: "unavailable,flaky"},
    ],
)
def test_invalid_retry_annotations_mean_no_retry_and_an_issue(annotations: dict[str, str]) -> None:
    issues = Issues()
    (rule,) = outbound(svc(**annotations), issues=issues).protocol.detect.http1.routes[0].rules
    assert not rule.HasField("retry")
    assert len(issues.messages) == 1
    assert "Service ns/web: invalid retry annotations" in issues.messages[0]


def test_invalid_timeout_annotation_is_reported_and_ignored() -> None:
    issues = Issues()
    s = svc(**{route_tuning.TIMEOUT_REQUEST: "soon", route_tuning.RETRY_HTTP: "5xx"})
    (rule,) = outbound(s, issues=issues).protocol.detect.http1.routes[0].rules
    assert not rule.HasField("timeouts")
    assert rule.HasField("retry")
    assert "invalid timeout annotations" in issues.messages[0]


def test_http_condition_forms() -> None:
    assert route_tuning.parse_http_conditions("5xx, gateway-error,404,420-429") == (
        (500, 599),
        (502, 504),
        (404, 404),
        (420, 429),
    )
    for bad in ("", "5xx,abc", "99", "600", "500-"):
        with pytest.raises(ValueError, match=r"status|HTTP"):
            route_tuning.parse_http_conditions(bad)


def test_allow_l5d_request_headers_follows_the_setting() -> None:
    settings = DestinationSettings(allow_l5d_request_headers=True)
    out = outbound(svc(), settings=settings)
    assert out.protocol.detect.http1.routes[0].rules[0].allow_l5d_request_headers
    out = outbound(svc(), grpc_route(), settings=settings)
    assert out.protocol.grpc.routes[0].rules[0].allow_l5d_request_headers


# -- inbound: routes whose parent is a Server ----------------------------------------------------


POD = t.pod("web-1", "10.1.0.1", container_ports=[{"name": "grpc", "containerPort": 8080}])


def server(protocol: str) -> dict[str, Any]:
    return {
        "kind": "Server",
        "metadata": {"name": "web", "namespace": "ns", "creationTimestamp": ""},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "port": 8080,
            "proxyProtocol": protocol,
            "accessPolicy": "all-unauthenticated",
        },
    }


SERVER_PARENT = {"group": "policy.linkerd.io", "kind": "Server", "name": "web"}


def test_grpc_server_takes_grpcroutes_and_reports_httproutes() -> None:
    rpc = route(
        "GRPCRoute",
        "rpc",
        {"parentRefs": [SERVER_PARENT], "rules": [{"matches": [{"method": {"service": "a.B"}}]}]},
    )
    http = route("HTTPRoute", "http", {"parentRefs": [SERVER_PARENT]})
    issues = Issues()
    out = inbound_server(POD, 8080, lookups(server("gRPC"), rpc, http), SETTINGS, issues)
    (grpc,) = out.protocol.grpc.routes
    assert grpc.metadata.resource.kind == "GRPCRoute"
    assert grpc.rules[0].matches[0].rpc.service == "a.B"
    assert any("a gRPC Server takes GRPCRoutes only" in m for m in issues.messages)


def test_http_server_takes_grpcroutes_in_their_http_form() -> None:
    rpc = route(
        "GRPCRoute",
        "rpc",
        {
            "parentRefs": [SERVER_PARENT],
            "rules": [{"matches": [{"method": {"service": "a.B", "method": "Get"}}]}],
        },
    )
    http = route("HTTPRoute", "http", {"parentRefs": [SERVER_PARENT]}, ts="2026-03-01T00:00:00Z")
    out = inbound_server(POD, 8080, lookups(server("HTTP/2"), rpc, http), SETTINGS, Issues())
    first, second = out.protocol.http2.routes
    assert first.metadata.resource.kind == "GRPCRoute"
    match = first.rules[0].matches[0]
    assert match.path.exact == "/a.B/Get"
    assert match.method.registered == 1  # POST
    assert second.metadata.resource.group == "gateway.networking.k8s.io"
    assert second.rules[0].matches[0].path.prefix == "/"


# -- the outbound topic follows backend Services -------------------------------------------------


async def test_outbound_topic_follows_a_backend_service_that_appears() -> None:
    from gossamer_api.proxy import outbound_pb2
    from gossamer_destination.cluster import Cluster
    from gossamer_destination.policy import Policies
    from gossamer_destination.topics import TopicRegistry

    r = grpc_route(backendRefs=[{"name": "web-v2", "port": 80}])
    sources = t.memory_sources(t.service("web"), r)
    cluster = Cluster(dict(sources))  # type: ignore[arg-type]
    cluster.start()
    await cluster.wait_synced()
    try:
        registry = TopicRegistry()
        topic = Policies(cluster, SETTINGS, registry).outbound_topic(
            outbound_pb2.TrafficSpec(authority="web.ns.svc.cluster.local:80")
        )
        sub, initial = registry.subscribe(topic, 10)

        def backend_filters(raw: bytes) -> int:
            policy = outbound_pb2.OutboundPolicy.FromString(raw)
            rule = policy.protocol.grpc.routes[0].rules[0]
            return len(rule.backends.random_available.backends[0].backend.filters)

        assert backend_filters(initial[0]) == 1  # the missing backend fails its calls
        sources["services"].apply(t.service("web-v2", cluster_ip="10.96.0.20"))
        (update,) = await asyncio.wait_for(sub.next_batch(), 5)
        assert backend_filters(update) == 0
        topic.unsubscribe(sub)
    finally:
        await cluster.stop()
