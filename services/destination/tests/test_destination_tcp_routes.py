"""TLSRoute and TCPRoute on a Service port, compiled to the outbound policy (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from gossamer_destination import testing as t
from gossamer_destination.httproutes import InvalidRouteError
from gossamer_destination.policy_inbound import PolicyLookups
from gossamer_destination.policy_outbound import service_policy
from gossamer_destination.profiles import Issues
from gossamer_destination.settings import DestinationSettings
from gossamer_destination.tcp_routes import sni_match

SETTINGS = DestinationSettings()
ALPHA = "gateway.networking.k8s.io/v1alpha2"
PARENT = {"group": "core", "kind": "Service", "name": "web", "port": 80}


def lookups(*objs: dict[str, Any]) -> PolicyLookups:
    def of(kind: str, ns: str) -> list[dict[str, Any]]:
        return [o for o in objs if o["kind"] == kind and o["metadata"]["namespace"] == ns]

    return PolicyLookups(
        namespace=lambda n: None,
        servers=lambda ns: [],
        authorization_policies=lambda ns: [],
        meshtls_authentication=lambda ns, n: None,
        network_authentication=lambda ns, n: None,
        http_routes=lambda ns: of("HTTPRoute", ns),
        server_authorizations=lambda ns: [],
        rate_limit_policies=lambda ns: [],
        grpc_routes=lambda ns: of("GRPCRoute", ns),
        tcp_routes=lambda ns: of("TCPRoute", ns),
        tls_routes=lambda ns: of("TLSRoute", ns),
    )


def route(kind: str, name: str, ts: str = "2026-01-01T00:00:00Z", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": ALPHA,
        "kind": kind,
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": ts},
        "spec": {"parentRefs": [PARENT], **spec},
    }


def ref(name: str, weight: int = 1) -> dict[str, Any]:
    return {"name": name, "port": 8443, "weight": weight}


def policy(*objs: dict[str, Any], issues: Issues | None = None, **svc_annotations: str) -> Any:
    service = t.service("web")
    service["metadata"]["annotations"] = svc_annotations
    exists = lambda ns, name: name != "gone"  # noqa: E731
    return service_policy(service, 80, lookups(*objs), exists, SETTINGS, issues or Issues())


def test_tls_routes_make_the_port_tls_with_sni_matches_and_pooled_weights() -> None:
    api = route(
        "TLSRoute",
        "api",
        hostnames=["API.example.com", "*.cdn.example.com"],
        rules=[{"backendRefs": [ref("api-v1", 3)]}, {"backendRefs": [ref("gone", 1)]}],
    )
    rest = route("TLSRoute", "rest", ts="2026-02-01T00:00:00Z", rules=[{"backendRefs": [ref("b")]}])
    out = policy(rest, api)
    assert out.protocol.WhichOneof("kind") == "tls"
    first, second = out.protocol.tls.routes
    assert (first.metadata.resource.kind, first.metadata.resource.name) == ("TLSRoute", "api")
    assert first.metadata.resource.group == "gateway.networking.k8s.io"
    assert [m.WhichOneof("match") for m in first.snis] == ["exact", "suffix"]
    assert first.snis[0].exact == "api.example.com"
    assert list(first.snis[1].suffix.reverse_labels) == ["com", "example", "cdn"]
    (rule,) = first.rules
    v1, gone = rule.backends.random_available.backends
    assert v1.weight == 3
    assert v1.backend.backend.balancer.discovery.dst.path == "api-v1.ns.svc.cluster.local:8443"
    assert gone.weight == 1
    assert not gone.backend.backend.WhichOneof("kind")
    assert gone.backend.filters[0].invalid.message == "Service not found ns/gone"
    assert not second.snis  # no hostnames: every name


def test_a_tcp_route_makes_the_port_opaque_and_the_oldest_wins() -> None:
    old = route("TCPRoute", "old", rules=[{"backendRefs": [ref("a", 1), ref("b", 2)]}])
    young = route(
        "TCPRoute", "young", ts="2026-03-01T00:00:00Z", rules=[{"backendRefs": [ref("c")]}]
    )
    issues = Issues()
    out = policy(young, old, issues=issues)
    (opaque,) = out.protocol.opaque.routes
    assert opaque.metadata.resource.name == "old"
    weights = [b.weight for b in opaque.rules[0].backends.random_available.backends]
    assert weights == [1, 2]
    assert any("TCPRoute ns/young not applied" in m for m in issues.messages)


def test_a_tcp_route_carries_an_opaque_port() -> None:
    tcp = route("TCPRoute", "db", rules=[{"backendRefs": [ref("db-replica")]}])
    out = policy(tcp, **{"config.linkerd.io/opaque-ports": "80"})
    (opaque,) = out.protocol.opaque.routes
    assert opaque.metadata.resource.name == "db"


def test_http_routes_keep_detection_and_tls_routes_are_reported() -> None:
    http = route("HTTPRoute", "h", rules=[{}])
    http["apiVersion"] = "gateway.networking.k8s.io/v1"
    tls = route("TLSRoute", "t", rules=[{"backendRefs": [ref("x")]}])
    issues = Issues()
    out = policy(http, tls, issues=issues)
    assert out.protocol.WhichOneof("kind") == "detect"
    assert any("TLSRoutes and TCPRoutes do not apply" in m for m in issues.messages)


def test_an_unusable_tls_route_is_skipped_with_the_reason() -> None:
    bad = route("TLSRoute", "bad", hostnames=["exa mple.com"], rules=[{"backendRefs": [ref("x")]}])
    issues = Issues()
    out = policy(bad, issues=issues)
    assert out.protocol.WhichOneof("kind") == "detect"  # as if it were not there
    assert any("TLSRoute ns/bad skipped" in m and "exa mple" in m for m in issues.messages)


@pytest.mark.parametrize("bad", ["", "*", "a.*.com", "*.", "-a.com", "a" * 64 + ".com", "é.com"])
def test_bad_hostnames_are_refused(bad: str) -> None:
    with pytest.raises(InvalidRouteError):
        sni_match(bad)
