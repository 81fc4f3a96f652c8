"""EgressNetwork: network matching, selection and the outbound policy it is served as."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from gossamer_api.proxy import net_pb2, outbound_pb2, outbound_pb2_grpc
from gossamer_destination import testing as t
from gossamer_destination.app import DestinationApp
from gossamer_destination.egress import (
    InvalidEgressNetworkError,
    egress_policy,
    egress_routes,
    parse_egress_network,
    select_egress_network,
)
from gossamer_destination.profiles import Issues
from gossamer_destination.settings import DestinationSettings
from gossamer_destination.testing import MemorySource, memory_sources
from gossamer_destination.wire import ip_address, ip_from_proto

CLUSTER = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
SETTINGS = DestinationSettings()
TIMEOUT = 5.0


def addr(text: str) -> Any:
    return ipaddress.ip_address(text)


def parsed(obj: dict[str, Any]) -> Any:
    return parse_egress_network(obj, CLUSTER)


# -- matching ------------------------------------------------------------------------------------


def test_networks_and_excepts_decide_what_matches() -> None:
    egress = parsed(
        t.egress_network(
            "e",
            networks=[
                {"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]},
                {"cidr": "2001:db8::/32"},
            ],
        )
    )
    assert egress.match_prefix(addr("203.0.113.5")) == 24
    assert egress.match_prefix(addr("203.0.113.200")) is None  # excepted
    assert egress.match_prefix(addr("198.51.100.1")) is None
    assert egress.match_prefix(addr("2001:db8::1")) == 32
    assert not egress.allow


def test_without_networks_everything_outside_the_cluster_matches() -> None:
    egress = parsed(t.egress_network("e", traffic_policy="Allow"))
    assert egress.allow
    assert egress.match_prefix(addr("8.8.8.8")) == 0
    assert egress.match_prefix(addr("2001:db8::1")) == 0
    assert egress.match_prefix(addr("10.1.2.3")) is None
    assert egress.match_prefix(addr("fd00::1")) is None


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"trafficPolicy": "Maybe"}, "trafficPolicy"),
        ({}, "trafficPolicy"),
        ({"trafficPolicy": "Deny", "networks": [{"cidr": "300.0.0.0/8"}]}, "invalid CIDR"),
        ({"trafficPolicy": "Deny", "networks": [{"cidr": 5}]}, "must be a string"),
        ({"trafficPolicy": "Deny", "networks": "1.2.3.0/24"}, "must be a list"),
        ({"trafficPolicy": "Deny", "networks": [{"cidr": "1.0.0.0/8", "except": "x"}]}, "list"),
    ],
)
def test_bad_egress_networks_are_refused_with_the_reason(spec: Any, reason: str) -> None:
    obj = {"kind": "EgressNetwork", "metadata": {"name": "e", "namespace": "ns"}, "spec": spec}
    with pytest.raises(InvalidEgressNetworkError, match=reason):
        parsed(obj)


# -- selection -----------------------------------------------------------------------------------


def test_the_client_namespace_wins_over_the_global_namespace() -> None:
    own = parsed(t.egress_network("own", "app", networks=[{"cidr": "0.0.0.0/0"}]))
    glob = parsed(t.egress_network("glob", "gossamer", networks=[{"cidr": "203.0.113.0/24"}]))
    other = parsed(t.egress_network("other", "elsewhere", networks=[{"cidr": "203.0.113.0/24"}]))
    nets = [glob, own, other]
    assert select_egress_network(nets, addr("203.0.113.1"), "app", "gossamer") is own
    # Another namespace's networks never apply; the global one does when the own has no match.
    assert select_egress_network(nets, addr("203.0.113.1"), "third", "gossamer") is glob
    assert select_egress_network(nets, addr("198.51.100.1"), "third", "gossamer") is None
    assert select_egress_network(nets, addr("203.0.113.1"), None, "gossamer") is glob


def test_the_most_specific_network_then_the_oldest_then_the_first_name_wins() -> None:
    wide = parsed(t.egress_network("wide", networks=[{"cidr": "203.0.0.0/8"}]))
    narrow = parsed(
        t.egress_network("narrow", networks=[{"cidr": "203.0.113.0/24"}], created="2026-06-01")
    )
    assert select_egress_network([wide, narrow], addr("203.0.113.9"), "ns", "g") is narrow
    assert select_egress_network([wide, narrow], addr("203.1.0.1"), "ns", "g") is wide
    old = parsed(t.egress_network("b", networks=[{"cidr": "203.0.0.0/8"}], created="2025-01-01"))
    assert select_egress_network([wide, old], addr("203.1.0.1"), "ns", "g") is old
    same = parsed(t.egress_network("a", networks=[{"cidr": "203.0.0.0/8"}]))
    assert select_egress_network([wide, same], addr("203.1.0.1"), "ns", "g") is same


# -- the policy ------------------------------------------------------------------------------------


def _policy(obj: dict[str, Any], routes: list[Any] = ()) -> outbound_pb2.OutboundPolicy:  # type: ignore[assignment]
    issues = Issues()
    out = egress_policy(
        parsed(obj), "203.0.113.7", 80, routes, lambda ns, n: True, SETTINGS, issues
    )
    assert not issues.messages, issues.messages
    return out


def test_deny_forbids_tcp_and_answers_http_403() -> None:
    policy = _policy(t.egress_network("deny", networks=[{"cidr": "203.0.113.0/24"}]))
    resource = policy.metadata.resource
    assert (resource.group, resource.kind, resource.name, resource.namespace, resource.port) == (
        "policy.linkerd.io", "EgressNetwork", "deny", "ns", 80,
    )  # fmt: skip
    detect = policy.protocol.detect
    assert detect.timeout.seconds == 10
    (opaque,) = detect.opaque.routes
    assert opaque.metadata.default == "tcp-egress-deny"
    assert [f.WhichOneof("kind") for f in opaque.rules[0].filters] == ["forbidden"]
    for http in (detect.http1, detect.http2):
        (route,) = http.routes
        assert route.metadata.default == "http-egress-deny"
        (injector,) = route.rules[0].filters
        assert injector.failure_injector.status == 403
        assert injector.failure_injector.message == "traffic not allowed"
    backend = opaque.rules[0].backends.first_available.backends[0].backend
    assert ip_from_proto(backend.forward.addr.ip) == "203.0.113.7"
    assert backend.forward.addr.port == 80
    assert backend.metadata.resource.kind == "EgressNetwork"


def test_allow_forwards_to_the_original_destination() -> None:
    detect = _policy(t.egress_network("ok", traffic_policy="Allow")).protocol.detect
    assert detect.opaque.routes[0].metadata.default == "tcp-egress-allow"
    assert not detect.opaque.routes[0].rules[0].filters
    (route,) = detect.http1.routes
    assert route.metadata.default == "http-egress-allow"
    assert not route.rules[0].filters
    backend = route.rules[0].backends.first_available.backends[0].backend
    assert backend.WhichOneof("kind") == "forward"


def _route(name: str, ns: str, parent_ns: str | None = None, **rule: Any) -> dict[str, Any]:
    parent: dict[str, Any] = {"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": "e"}
    if parent_ns:
        parent["namespace"] = parent_ns
    return {
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2026-01-01"},
        "spec": {"parentRefs": [parent], "rules": [rule]},
    }


def test_routes_on_the_egress_network_come_before_its_traffic_policy() -> None:
    get = _route(
        "get",
        "ns",
        matches=[{"path": {"type": "PathPrefix", "value": "/get"}}],
        backendRefs=[{"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": "e"}],
    )
    unrelated = {**_route("x", "ns"), "spec": {"parentRefs": [{"kind": "Service", "name": "e"}]}}
    egress = parsed(t.egress_network("e"))
    routes = egress_routes(egress, 80, lambda ns: [get, unrelated] if ns == "ns" else [], "app")
    assert routes == [get]
    detect = _policy(t.egress_network("e"), routes).protocol.detect
    first, fallback = detect.http1.routes
    assert first.metadata.resource.name == "get"
    assert first.rules[0].matches[0].path.prefix == "/get"
    assert not first.rules[0].filters  # allowed: to the original destination
    forward = first.rules[0].backends.first_available.backends[0].backend
    assert ip_from_proto(forward.forward.addr.ip) == "203.0.113.7"
    assert fallback.metadata.default == "http-egress-deny"


def test_a_client_namespace_route_overrides_the_egress_namespace_routes() -> None:
    producer = _route("producer", "ns")
    consumer = _route("consumer", "app", parent_ns="ns")
    by_ns = {"ns": [producer], "app": [consumer]}
    egress = parsed(t.egress_network("e"))
    assert egress_routes(egress, 80, lambda ns: by_ns.get(ns, []), "app") == [consumer]
    assert egress_routes(egress, 80, lambda ns: by_ns.get(ns, []), "other") == [producer]


def test_a_route_mixing_its_parent_with_other_backends_is_skipped() -> None:
    bad = _route(
        "bad",
        "ns",
        backendRefs=[{"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": "e"},
                     {"name": "web", "port": 80}],
    )  # fmt: skip
    issues = Issues()
    policy = egress_policy(
        parsed(t.egress_network("e")), "203.0.113.7", 80, [bad], lambda ns, n: True, SETTINGS,
        issues,
    )  # fmt: skip
    assert [r.metadata.default for r in policy.protocol.detect.http1.routes] == ["http-egress-deny"]
    assert any("bad" in m and "mix" in m for m in issues.messages)


# -- served over gRPC, following changes ------------------------------------------------------


@pytest.fixture
async def served() -> AsyncIterator[
    tuple[outbound_pb2_grpc.OutboundPoliciesStub, dict[str, MemorySource]]
]:
    sources = memory_sources(t.namespace("app"), t.service("web", "app"))
    settings = DestinationSettings(
        grpc_addr="127.0.0.1:0", policy_addr="127.0.0.1:0", admin_addr="127.0.0.1:0"
    )
    app = DestinationApp(settings, dict(sources))  # type: ignore[arg-type]
    await asyncio.wait_for(app.start(), TIMEOUT)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    try:
        yield outbound_pb2_grpc.OutboundPoliciesStub(channel), sources
    finally:
        await channel.close()
        await app.stop(grace=0)


def _spec(ip: str, ns: str = "app") -> outbound_pb2.TrafficSpec:
    return outbound_pb2.TrafficSpec(
        source_workload=f'{{"ns":"{ns}","pod":"client"}}',
        addr=net_pb2.TcpAddress(ip=ip_address(ip), port=80),
    )


async def test_watch_follows_egress_networks_as_they_change(served: Any) -> None:
    stub, sources = served
    stream = stub.Watch(_spec("203.0.113.7"))
    read = lambda: asyncio.wait_for(stream.read(), TIMEOUT)  # noqa: E731
    assert (await read()).metadata.default == "egress-fallback"
    # A global (control-plane namespace) Deny applies to every client namespace.
    sources["egressnetworks"].apply(t.egress_network("all", "gossamer"))
    denied = await read()
    assert denied.metadata.resource.name == "all"
    assert denied.protocol.detect.opaque.routes[0].metadata.default == "tcp-egress-deny"
    # The client namespace's own network wins.
    sources["egressnetworks"].apply(
        t.egress_network(
            "mine", "app", traffic_policy="Allow", networks=[{"cidr": "203.0.113.0/24"}]
        )
    )
    allowed = await read()
    assert (allowed.metadata.resource.namespace, allowed.metadata.resource.name) == ("app", "mine")
    sources["egressnetworks"].remove("app", "mine")
    assert (await read()).metadata.resource.name == "all"
    stream.cancel()


async def test_an_in_cluster_address_is_served_only_when_an_egress_network_holds_it(
    served: Any,
) -> None:
    stub, sources = served
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(stub.Watch(_spec("10.9.9.9")).read(), TIMEOUT)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # An open stream's update shows the destination has seen the new EgressNetwork.
    outside = stub.Watch(_spec("203.0.113.7"))
    assert (await asyncio.wait_for(outside.read(), TIMEOUT)).metadata.default == "egress-fallback"
    nets = [{"cidr": "10.9.0.0/16"}, {"cidr": "203.0.113.0/24"}]
    sources["egressnetworks"].apply(t.egress_network("vm", "app", networks=nets))
    assert (await asyncio.wait_for(outside.read(), TIMEOUT)).metadata.resource.name == "vm"
    outside.cancel()
    policy = await asyncio.wait_for(stub.Watch(_spec("10.9.9.9")).read(), TIMEOUT)
    assert policy.metadata.resource.name == "vm"


# -- GRPCRoute and TCPRoute parents -----------------------------------------------------------

TO_PARENT = {"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": "e"}


def _typed(kind: str, name: str, **rule: Any) -> dict[str, Any]:
    route = _route(name, "ns", **rule)
    return {**route, "apiVersion": "gateway.networking.k8s.io/v1", "kind": kind}


def test_grpc_routes_make_the_port_grpc_with_the_traffic_policy_last() -> None:
    hello = _typed(
        "GRPCRoute",
        "hello",
        matches=[{"method": {"service": "demo.Greeter", "method": "Hello"}}],
        backendRefs=[TO_PARENT],
    )
    egress = parsed(t.egress_network("e"))
    routes = egress_routes(egress, 80, lambda ns: [hello] if ns == "ns" else [], "app")
    issues = Issues()
    policy = egress_policy(
        egress, "203.0.113.7", 80, [], lambda ns, n: True, SETTINGS, issues, grpc_routes=routes
    )
    assert not issues.messages
    assert policy.protocol.WhichOneof("kind") == "grpc"
    first, fallback = policy.protocol.grpc.routes
    assert first.metadata.resource.name == "hello"
    assert first.rules[0].matches[0].rpc.service == "demo.Greeter"
    assert not first.rules[0].filters  # allowed through to the original destination
    forward = first.rules[0].backends.first_available.backends[0].backend
    assert ip_from_proto(forward.forward.addr.ip) == "203.0.113.7"
    assert fallback.metadata.default == "grpc-egress-deny"
    (denied,) = fallback.rules[0].filters
    assert denied.failure_injector.code == 7  # PERMISSION_DENIED
    assert denied.failure_injector.message == "traffic not allowed"


def test_a_tcp_route_carries_the_opaque_traffic_in_place_of_the_traffic_policy() -> None:
    through = _typed("TCPRoute", "through", backendRefs=[TO_PARENT])
    issues = Issues()
    policy = egress_policy(
        parsed(t.egress_network("e")), "203.0.113.7", 5000, [], lambda ns, n: True, SETTINGS,
        issues, tcp_routes=[through],
    )  # fmt: skip
    assert not issues.messages
    detect = policy.protocol.detect
    (opaque,) = detect.opaque.routes
    resource = opaque.metadata.resource
    assert (resource.group, resource.kind, resource.name) == (
        "gateway.networking.k8s.io", "TCPRoute", "through",
    )  # fmt: skip
    assert not opaque.rules[0].filters  # Deny no longer applies to TCP on this port
    (weighted,) = opaque.rules[0].backends.random_available.backends
    assert weighted.backend.backend.forward.addr.port == 5000
    # HTTP keeps the trafficPolicy: only the TCPRoute's opaque traffic passes.
    assert detect.http1.routes[0].metadata.default == "http-egress-deny"


def test_a_tcp_route_may_send_egress_traffic_to_a_service() -> None:
    to_service = _typed(
        "TCPRoute", "inside", backendRefs=[{"name": "proxy", "port": 3128, "weight": 3}]
    )
    issues = Issues()
    policy = egress_policy(
        parsed(t.egress_network("e")), "203.0.113.7", 5000, [], lambda ns, n: n == "proxy",
        SETTINGS, issues, tcp_routes=[to_service],
    )  # fmt: skip
    (weighted,) = (
        policy.protocol.detect.opaque.routes[0].rules[0].backends.random_available.backends
    )
    assert weighted.weight == 3
    path = weighted.backend.backend.balancer.discovery.dst.path
    assert path == "proxy.ns.svc.cluster.local:3128"


@pytest.mark.parametrize(
    ("rules", "reason"),
    [
        ([{}], "no backendRefs"),
        ([], "no rules"),
        ([{"backendRefs": [{"name": "web"}]}], "needs a name and a port"),
        ([{"backendRefs": [{"kind": "Pod", "name": "x"}]}], "neither a Service"),
        ([{"backendRefs": [{**TO_PARENT, "weight": -1}]}], "weight -1"),
    ],
)
def test_an_unusable_tcp_route_is_skipped_with_the_reason(rules: Any, reason: str) -> None:
    bad = _typed("TCPRoute", "bad", backendRefs=[])
    bad["spec"]["rules"] = rules
    issues = Issues()
    policy = egress_policy(
        parsed(t.egress_network("e")), "203.0.113.7", 5000, [], lambda ns, n: n == "web",
        SETTINGS, issues, tcp_routes=[bad],
    )  # fmt: skip
    assert policy.protocol.detect.opaque.routes[0].metadata.default == "tcp-egress-deny"
    assert any("TCPRoute ns/bad skipped" in m and reason in m for m in issues.messages), issues


def test_a_tcp_route_pools_the_backends_of_every_rule() -> None:
    """No matches choose between a TCPRoute's rules: their backendRefs share one split, and
    a Service that does not exist keeps its weight, refused with ``Invalid``."""
    two = _typed("TCPRoute", "two", backendRefs=[])
    two["spec"]["rules"] = [
        {"backendRefs": [{**TO_PARENT, "weight": 1}]},
        {"backendRefs": [{"name": "gone", "port": 80, "weight": 2}]},
    ]
    issues = Issues()
    policy = egress_policy(
        parsed(t.egress_network("e")), "203.0.113.7", 5000, [], lambda ns, n: False,
        SETTINGS, issues, tcp_routes=[two],
    )  # fmt: skip
    assert not issues.messages
    (rule,) = policy.protocol.detect.opaque.routes[0].rules
    parent, gone = rule.backends.random_available.backends
    assert (parent.weight, parent.backend.backend.forward.addr.port) == (1, 5000)
    assert gone.weight == 2
    (invalid,) = gone.backend.filters
    assert invalid.invalid.message == "Service not found ns/gone"


def test_tls_routes_route_egress_by_sni_before_the_traffic_policy() -> None:
    api = _typed("TLSRoute", "api", backendRefs=[TO_PARENT])
    api["spec"]["hostnames"] = ["api.example.com", "*.cdn.example.com"]
    issues = Issues()
    policy = egress_policy(
        parsed(t.egress_network("e")), "203.0.113.7", 443, [], lambda ns, n: True,
        SETTINGS, issues, tls_routes=[api],
    )  # fmt: skip
    assert not issues.messages
    assert policy.protocol.WhichOneof("kind") == "tls"
    route, fallback = policy.protocol.tls.routes
    assert route.metadata.resource.kind == "TLSRoute"
    exact, wildcard = route.snis
    assert exact.exact == "api.example.com"
    assert list(wildcard.suffix.reverse_labels) == ["com", "example", "cdn"]
    (weighted,) = route.rules[0].backends.random_available.backends
    assert weighted.backend.backend.forward.addr.port == 443
    assert fallback.metadata.default == "tls-egress-deny"
    assert not fallback.snis  # any other name gets the trafficPolicy
    assert fallback.rules[0].filters[0].WhichOneof("kind") == "forbidden"


async def test_watch_follows_tcp_routes_on_the_egress_network(served: Any) -> None:
    stub, sources = served
    sources["egressnetworks"].apply(t.egress_network("e", "app"))
    stream = stub.Watch(_spec("203.0.113.7"))
    read = lambda: asyncio.wait_for(stream.read(), TIMEOUT)  # noqa: E731
    assert (await read()).protocol.detect.opaque.routes[0].metadata.default == "tcp-egress-deny"
    route = _typed("TCPRoute", "through", backendRefs=[TO_PARENT])
    route["metadata"]["namespace"] = "app"
    sources["tcproutes"].apply({**route, "apiVersion": "gateway.networking.k8s.io/v1alpha2"})
    opaque = (await read()).protocol.detect.opaque.routes[0]
    assert opaque.metadata.resource.name == "through"
    stream.cancel()
