"""Opaque/TLS route selection (sans-io): SNI matching, precedence, weights, refusals."""

from __future__ import annotations

import pytest
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import destination_pb2, opaque_route_pb2, outbound_pb2, tls_route_pb2
from gossamer_proxy.inbound_tls import classify
from gossamer_proxy.mesh.outbound_policy import OutboundPolicyError, compile_outbound_policy
from gossamer_proxy.mesh.tcp_policy import SniMatch, find_tls_route, route_connection
from gossamer_proxy.mesh.tls_detect import ClientHello

WEB = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"


class FixedRandom:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def _backend(port: int) -> outbound_pb2.Backend:
    backend = outbound_pb2.Backend()
    backend.metadata.resource.name = f"backend-{port}"
    backend.forward.CopyFrom(
        destination_pb2.WeightedAddr(addr=tcp_address_to_proto("192.0.2.1", port), weight=1)
    )
    return backend


def _exact(name: str) -> tls_route_pb2.SniMatch:
    return tls_route_pb2.SniMatch(exact=name)


def _wildcard(name: str) -> tls_route_pb2.SniMatch:
    labels = name.removeprefix("*.").split(".")
    return tls_route_pb2.SniMatch(
        suffix=tls_route_pb2.SniMatch.Suffix(reverse_labels=list(reversed(labels)))
    )


def _tls_route(
    name: str, snis: list[tls_route_pb2.SniMatch], *rules: list[tuple[int, int]]
) -> outbound_pb2.TlsRoute:
    route = outbound_pb2.TlsRoute()
    route.metadata.resource.kind = "TLSRoute"
    route.metadata.resource.name = name
    route.snis.extend(snis)
    for weighted in rules:
        rule = route.rules.add()
        for port, weight in weighted:
            wrb = rule.backends.random_available.backends.add(weight=weight)
            wrb.backend.backend.CopyFrom(_backend(port))
    return route


def _tls_policy(*routes: outbound_pb2.TlsRoute) -> outbound_pb2.OutboundPolicy:
    policy = outbound_pb2.OutboundPolicy()
    policy.metadata.resource.kind = "Service"
    policy.protocol.tls.routes.extend(routes)
    return policy


def _port(decision_backend: object) -> int:
    forward = getattr(decision_backend, "forward", None)
    assert forward is not None
    return int(forward.port)


def test_sni_match_exact_and_wildcard() -> None:
    wildcard = SniMatch(suffix=("example", "com"))
    assert wildcard.rank("a.example.com") == (1, 2)
    assert wildcard.rank("a.b.example.com") == (1, 2)
    assert wildcard.rank("example.com") is None  # a wildcard needs one more label
    assert wildcard.rank("a.example.org") is None
    assert wildcard.rank("badexample.com") is None
    assert SniMatch(exact="api.example.com").rank("api.example.com") == (2, 15)
    assert SniMatch(exact="api.example.com").rank("x.api.example.com") is None
    assert wildcard.rank(None) is None


def test_most_specific_route_wins_then_oldest() -> None:
    policy = compile_outbound_policy(
        _tls_policy(
            _tls_route("catch-all", [], [(1, 1)]),
            _tls_route("wide", [_wildcard("*.com")], [(2, 1)]),
            _tls_route("narrow", [_wildcard("*.example.com")], [(3, 1)]),
            _tls_route("exact", [_exact("api.example.com")], [(4, 1)]),
            _tls_route("exact-younger", [_exact("api.example.com")], [(5, 1)]),
        )
    )
    routes = policy.tls_routes
    assert policy.protocol == "tls"

    def chosen(sni: str | None) -> str | None:
        route = find_tls_route(routes, sni)
        return route.meta.name if route else None

    assert chosen("api.example.com") == "exact"
    assert chosen("www.example.com") == "narrow"
    assert chosen("www.other.com") == "wide"
    assert chosen("localhost") == "catch-all"
    assert chosen(None) == "catch-all"  # a ClientHello without SNI


def test_unmatched_sni_has_no_route() -> None:
    routes = compile_outbound_policy(
        _tls_policy(_tls_route("api", [_exact("api.example.com")], [(1, 1)]))
    ).tls_routes
    decision = route_connection(routes, FixedRandom(0.0), tls=True, server_name="evil.example.com")
    assert (decision.route, decision.error) == (None, "no_route")
    decision = route_connection(routes, FixedRandom(0.0), tls=True, server_name=None)
    assert decision.error == "no_route"
    decision = route_connection(routes, FixedRandom(0.0), tls=True, server_name="api.example.com")
    assert decision.error is None
    assert _port(decision.backend) == 1


@pytest.mark.parametrize(
    "sni",
    [
        "a" * 60 + "." + "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + ".example.com",  # 254
        "x" * 65536,
        "a" * 64 + ".example.com",  # a label over 63
        "api.example.com\x00.evil",
        "api example.com",
        "a..example.com",
        "*.example.com",
    ],
)
def test_an_invalid_sni_has_no_route_even_with_a_catch_all(sni: str) -> None:
    routes = compile_outbound_policy(_tls_policy(_tls_route("catch-all", [], [(1, 1)]))).tls_routes
    decision = route_connection(routes, FixedRandom(0.0), tls=True, server_name=sni)
    assert (decision.route, decision.backend, decision.error) == (None, None, "no_route")
    assert "invalid SNI" in decision.message
    longest = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters
    for good in (longest, "api.example.com", "_svc.example-1.com", "localhost"):
        assert route_connection(routes, FixedRandom(0.0), tls=True, server_name=good).error is None


def test_an_invalid_passthrough_sni_labels_nothing() -> None:
    # Passed through like any other name, but a 64 KiB "name" is no metric label value.
    assert classify(ClientHello("x" * 65536, ()), WEB).passthrough_sni == ""
    assert classify(ClientHello("a b", ()), WEB).passthrough_sni == ""
    assert classify(ClientHello("api.example.com", ()), WEB).passthrough_sni == "api.example.com"
    assert classify(ClientHello(WEB, ()), WEB).terminate


def test_backends_of_every_rule_share_the_weights() -> None:
    routes = compile_outbound_policy(
        _tls_policy(_tls_route("split", [], [(1, 1)], [(2, 3)]))
    ).tls_routes
    picks = [
        _port(route_connection(routes, FixedRandom(x / 8), tls=True, server_name="a").backend)
        for x in range(8)
    ]
    assert picks.count(1) == 2
    assert picks.count(2) == 6


def _opaque_policy(route: outbound_pb2.OpaqueRoute) -> outbound_pb2.OutboundPolicy:
    policy = outbound_pb2.OutboundPolicy()
    policy.metadata.resource.kind = "Service"
    policy.protocol.opaque.routes.append(route)
    return policy


def test_opaque_route_refusals_and_weights() -> None:
    route = outbound_pb2.OpaqueRoute()
    route.metadata.resource.kind = "TCPRoute"
    rule = route.rules.add()
    ok = rule.backends.random_available.backends.add(weight=1)
    ok.backend.backend.CopyFrom(_backend(7))
    missing = rule.backends.random_available.backends.add(weight=1)
    # Linkerd's form of an unresolvable backendRef: a backend without kind, ``Invalid``.
    missing.backend.backend.metadata.resource.name = "gone"
    missing.backend.filters.add().invalid.CopyFrom(
        opaque_route_pb2.Invalid(message="Service not found gone")
    )
    routes = compile_outbound_policy(_opaque_policy(route)).opaque_routes
    first = route_connection(routes, FixedRandom(0.1), tls=False)
    assert first.error is None
    assert _port(first.backend) == 7
    second = route_connection(routes, FixedRandom(0.9), tls=False)
    assert (second.error, second.message) == ("invalid", "Service not found gone")


def test_forbidden_rule_with_empty_distribution_refuses() -> None:
    route = outbound_pb2.OpaqueRoute()
    route.metadata.default = "undefined-port"
    rule = route.rules.add()
    rule.backends.empty.SetInParent()
    rule.filters.add().forbidden.CopyFrom(opaque_route_pb2.Forbidden())
    routes = compile_outbound_policy(_opaque_policy(route)).opaque_routes
    assert route_connection(routes, FixedRandom(0.5), tls=False).error == "forbidden"


def test_zero_weights_leave_no_backend() -> None:
    routes = compile_outbound_policy(_tls_policy(_tls_route("zero", [], [(1, 0)]))).tls_routes
    decision = route_connection(routes, FixedRandom(0.5), tls=True, server_name="a")
    assert decision.error == "no_backend"


@pytest.mark.parametrize(
    "bad",
    [
        tls_route_pb2.SniMatch(),
        tls_route_pb2.SniMatch(exact=""),
        tls_route_pb2.SniMatch(exact="a" * 300),
        tls_route_pb2.SniMatch(suffix=tls_route_pb2.SniMatch.Suffix(reverse_labels=[])),
        tls_route_pb2.SniMatch(suffix=tls_route_pb2.SniMatch.Suffix(reverse_labels=["com", ""])),
    ],
)
def test_malformed_sni_match_rejects_the_policy(bad: tls_route_pb2.SniMatch) -> None:
    with pytest.raises(OutboundPolicyError, match="route 'bad'"):
        compile_outbound_policy(_tls_policy(_tls_route("bad", [bad], [(1, 1)])))
