"""Inbound and outbound policy resolution (pure)."""

from __future__ import annotations

from typing import Any

from gossamer_destination import testing as t
from gossamer_destination.policy_inbound import PolicyLookups, inbound_server
from gossamer_destination.policy_outbound import egress_fallback, service_policy
from gossamer_destination.profiles import Issues
from gossamer_destination.settings import DestinationSettings

SETTINGS = DestinationSettings()


def lookups(*objs: dict[str, Any]) -> PolicyLookups:
    def of(kind: str) -> list[dict[str, Any]]:
        return [o for o in objs if o["kind"] == kind]

    def named(kind: str, ns: str, name: str) -> dict[str, Any] | None:
        for o in of(kind):
            if o["metadata"]["namespace"] == ns and o["metadata"]["name"] == name:
                return o
        return None

    return PolicyLookups(
        namespace=lambda n: next((o for o in of("Namespace") if o["metadata"]["name"] == n), None),
        servers=lambda ns: [o for o in of("Server") if o["metadata"]["namespace"] == ns],
        authorization_policies=lambda ns: [
            o for o in of("AuthorizationPolicy") if o["metadata"]["namespace"] == ns
        ],
        meshtls_authentication=lambda ns, n: named("MeshTLSAuthentication", ns, n),
        network_authentication=lambda ns, n: named("NetworkAuthentication", ns, n),
        http_routes=lambda ns: [o for o in of("HTTPRoute") if o["metadata"]["namespace"] == ns],
        server_authorizations=lambda ns: [
            o for o in of("ServerAuthorization") if o["metadata"]["namespace"] == ns
        ],
        rate_limit_policies=lambda ns: [
            o for o in of("HTTPLocalRateLimitPolicy") if o["metadata"]["namespace"] == ns
        ],
    )


def res(kind: str, name: str, spec: dict[str, Any], ns: str = "ns", ts: str = "") -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": ts},
        "spec": spec,
    }


def server(name: str = "web-http", port: Any = 8080, **spec: Any) -> dict[str, Any]:
    return res(
        "Server", name, {"podSelector": {"matchLabels": {"app": "web"}}, "port": port, **spec}
    )


POD = t.pod(
    "web-1",
    "10.1.0.1",
    container_ports=[{"name": "http", "containerPort": 8080}],
    probes={"livenessProbe": {"httpGet": {"path": "/live", "port": "http"}}},
)


def test_default_all_unauthenticated_with_probe_route() -> None:
    out = inbound_server(POD, 8080, lookups(), SETTINGS, Issues())
    assert dict(out.labels) == {"group": "", "kind": "default", "name": "all-unauthenticated"}
    assert out.protocol.detect.timeout.seconds == 10
    (authz,) = out.authorizations
    assert len(authz.networks) == 2
    assert authz.authentication.HasField("unauthenticated")
    assert authz.metadata.default == "all-unauthenticated"
    default, probe = out.protocol.detect.http_routes
    assert default.metadata.default == "default"
    assert default.rules[0].matches[0].path.prefix == "/"
    assert probe.metadata.default == "probe"
    assert probe.rules[0].matches[0].path.exact == "/live"
    assert probe.authorizations[0].authentication.HasField("unauthenticated")


def test_namespace_and_pod_annotations_override_default() -> None:
    ns = t.namespace("ns", {"config.linkerd.io/default-inbound-policy": "deny"})
    out = inbound_server(POD, 8080, lookups(ns), SETTINGS, Issues())
    assert out.labels["name"] == "deny"
    assert not out.authorizations
    pod = t.pod(
        "web-2",
        "10.1.0.2",
        annotations={"config.linkerd.io/default-inbound-policy": "all-authenticated"},
    )
    out = inbound_server(pod, 8080, lookups(ns), SETTINGS, Issues())
    assert out.labels["name"] == "all-authenticated"
    clients = out.authorizations[0].authentication.meshTLS.identities
    assert [list(s.parts) for s in clients.suffixes] == [[]]


def test_invalid_default_policy_annotation_is_reported_and_ignored() -> None:
    ns = t.namespace("ns", {"config.linkerd.io/default-inbound-policy": "allow-everyone"})
    issues = Issues()
    out = inbound_server(POD, 8080, lookups(ns), SETTINGS, issues)
    assert out.labels["name"] == "all-unauthenticated"
    assert issues.messages


def test_require_identity_ports_and_cluster_policy() -> None:
    pod = t.pod(
        "web-3",
        "10.1.0.3",
        annotations={
            "config.linkerd.io/default-inbound-policy": "cluster-unauthenticated",
            "config.linkerd.io/proxy-require-identity-inbound-ports": "8080",
        },
    )
    out = inbound_server(pod, 8080, lookups(), SETTINGS, Issues())
    assert out.labels["name"] == "cluster-authenticated"
    assert len(out.authorizations[0].networks) == len(SETTINGS.cluster_networks)


def test_opaque_default_port() -> None:
    out = inbound_server(POD, 3306, lookups(), SETTINGS, Issues())
    assert out.protocol.HasField("opaque")


def test_server_without_authorization_denies_and_named_port_matches() -> None:
    out = inbound_server(POD, 8080, lookups(server(port="http")), SETTINGS, Issues())
    assert dict(out.labels) == {"group": "policy.linkerd.io", "kind": "server", "name": "web-http"}
    assert not out.authorizations
    assert out.protocol.detect.http_routes[0].metadata.default == "default"


def test_server_protocol_and_oldest_server_wins() -> None:
    older = server("a-old", proxyProtocol="opaque")
    older["metadata"]["creationTimestamp"] = "2020-01-01T00:00:00Z"
    newer = server("b-new", proxyProtocol="HTTP/2")
    newer["metadata"]["creationTimestamp"] = "2021-01-01T00:00:00Z"
    out = inbound_server(POD, 8080, lookups(newer, older), SETTINGS, Issues())
    assert out.labels["name"] == "a-old"
    assert out.protocol.HasField("opaque")
    out = inbound_server(POD, 8080, lookups(newer), SETTINGS, Issues())
    assert out.protocol.http2.routes[0].metadata.default == "default"


def test_authorization_policy_with_meshtls_and_network_authentication() -> None:
    policy = res(
        "AuthorizationPolicy",
        "web-authz",
        {
            "targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "web-http"},
            "requiredAuthenticationRefs": [
                {"group": "policy.linkerd.io", "kind": "MeshTLSAuthentication", "name": "clients"},
                {"group": "policy.linkerd.io", "kind": "NetworkAuthentication", "name": "pods"},
            ],
        },
    )
    mtls = res(
        "MeshTLSAuthentication",
        "clients",
        {
            "identities": ["a.b.serviceaccount.identity.gossamer.cluster.local", "*.other.example"],
            "identityRefs": [{"kind": "ServiceAccount", "name": "client"}],
        },
    )
    net = res(
        "NetworkAuthentication",
        "pods",
        {"networks": [{"cidr": "10.1.0.0/16", "except": ["10.1.9.0/24"]}]},
    )
    out = inbound_server(POD, 8080, lookups(server(), policy, mtls, net), SETTINGS, Issues())
    (authz,) = out.authorizations
    assert dict(authz.labels) == {
        "group": "policy.linkerd.io",
        "kind": "authorizationpolicy",
        "name": "web-authz",
    }
    assert authz.metadata.resource.name == "web-authz"
    (network,) = authz.networks
    assert network.net.prefix_len == 16
    assert getattr(network, "except")[0].prefix_len == 24
    ids = authz.authentication.meshTLS.identities
    assert [i.name for i in ids.identities] == [
        "a.b.serviceaccount.identity.gossamer.cluster.local",
        "client.ns.serviceaccount.identity.gossamer.cluster.local",
    ]
    assert [list(s.parts) for s in ids.suffixes] == [["other", "example"]]
    # The default route of a Server without HTTPRoutes carries the server's authorizations.
    assert out.protocol.detect.http_routes[0].authorizations[0].labels["name"] == "web-authz"


def test_policy_with_missing_ref_or_unknown_kind_is_skipped() -> None:
    missing = res(
        "AuthorizationPolicy",
        "waits",
        {
            "targetRef": {"kind": "Server", "name": "web-http"},
            "requiredAuthenticationRefs": [{"kind": "MeshTLSAuthentication", "name": "nope"}],
        },
    )
    unknown = res(
        "AuthorizationPolicy",
        "odd",
        {
            "targetRef": {"kind": "Server", "name": "web-http"},
            "requiredAuthenticationRefs": [{"kind": "Certificate", "name": "x"}],
        },
    )
    bad_target = res("AuthorizationPolicy", "odd2", {"targetRef": {"kind": "Pod", "name": "x"}})
    issues = Issues()
    out = inbound_server(
        POD, 8080, lookups(server(), missing, unknown, bad_target), SETTINGS, issues
    )
    assert not out.authorizations
    assert len(issues.messages) == 2


def test_server_authorizations_by_name_and_selector() -> None:
    """A Server protected only by legacy ServerAuthorizations gets their authorizations."""
    labelled = server()
    labelled["metadata"]["labels"] = {"tier": "front"}
    by_name = res(
        "ServerAuthorization",
        "a-by-name",
        {
            "server": {"name": "web-http"},
            "client": {
                "meshTLS": {
                    "identities": ["x.y.serviceaccount.identity.gossamer.cluster.local", "*"],
                    "serviceAccounts": [{"name": "client"}, {"name": "ing", "namespace": "edge"}],
                }
            },
        },
    )
    by_selector = res(
        "ServerAuthorization",
        "b-by-selector",
        {
            "server": {"selector": {"matchLabels": {"tier": "front"}}},
            "client": {
                "unauthenticated": True,
                "networks": [{"cidr": "10.0.0.0/8", "except": ["10.9.0.0/16"]}],
            },
        },
    )
    bootstrap = res(
        "ServerAuthorization",
        "c-tls",
        {"server": {"name": "web-http"}, "client": {"meshTLS": {"unauthenticatedTLS": True}}},
    )
    elsewhere = res(
        "ServerAuthorization",
        "d-other",
        {"server": {"name": "other"}, "client": {"unauthenticated": True}},
    )
    other_ns = res(
        "ServerAuthorization",
        "e-other-ns",
        {"server": {"name": "web-http"}, "client": {"unauthenticated": True}},
        ns="elsewhere",
    )
    invalid = res(
        "ServerAuthorization",
        "f-invalid",
        {"server": {"name": "web-http"}, "client": {"meshTLS": {}}},
    )
    issues = Issues()
    out = inbound_server(
        POD,
        8080,
        lookups(labelled, by_name, by_selector, bootstrap, elsewhere, other_ns, invalid),
        SETTINGS,
        issues,
    )
    assert [dict(a.labels) for a in out.authorizations] == [
        {"group": "policy.linkerd.io", "kind": "serverauthorization", "name": n}
        for n in ("a-by-name", "b-by-selector", "c-tls")
    ]
    mesh, open_net, tls = out.authorizations
    assert mesh.metadata.resource.kind == "serverauthorization"
    assert mesh.metadata.resource.namespace == "ns"
    ids = mesh.authentication.meshTLS.identities
    assert [i.name for i in ids.identities] == [
        "x.y.serviceaccount.identity.gossamer.cluster.local",
        "client.ns.serviceaccount.identity.gossamer.cluster.local",
        "ing.edge.serviceaccount.identity.gossamer.cluster.local",
    ]
    assert [list(s.parts) for s in ids.suffixes] == [[]]
    # Without networks, the cluster networks are sent (an Authz without any is ignored).
    assert len(mesh.networks) == len(SETTINGS.cluster_networks)
    assert open_net.authentication.HasField("unauthenticated")
    (network,) = open_net.networks
    assert network.net.prefix_len == 8
    assert getattr(network, "except")[0].prefix_len == 16
    assert tls.authentication.meshTLS.HasField("unauthenticated")
    assert [m for m in issues.messages if "f-invalid" in m]
    # The default route of the Server carries them as well.
    route_authzs = out.protocol.detect.http_routes[0].authorizations
    assert [a.labels["name"] for a in route_authzs] == ["a-by-name", "b-by-selector", "c-tls"]


def test_rate_limit_policy_is_served_on_the_servers_http_protocol() -> None:
    older = res(
        "HTTPLocalRateLimitPolicy",
        "web-rl",
        {
            "targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "web-http"},
            "total": {"requestsPerSecond": 100},
            "identity": {"requestsPerSecond": 20},
            "overrides": [
                {
                    "requestsPerSecond": 50,
                    "clientRefs": [
                        {"kind": "ServiceAccount", "name": "batch"},
                        {"kind": "ServiceAccount", "name": "ops", "namespace": "tools"},
                    ],
                }
            ],
        },
        ts="2020-01-01T00:00:00Z",
    )
    newer = res(
        "HTTPLocalRateLimitPolicy",
        "web-rl-2",
        {"targetRef": {"kind": "Server", "name": "web-http"}, "total": {"requestsPerSecond": 1}},
        ts="2021-01-01T00:00:00Z",
    )
    issues = Issues()
    out = inbound_server(POD, 8080, lookups(server(), newer, older), SETTINGS, issues)
    limit = out.protocol.detect.http_local_rate_limit
    assert limit.metadata.resource.kind == "HTTPLocalRateLimitPolicy"
    assert limit.metadata.resource.name == "web-rl"
    assert limit.total.requestsPerSecond == 100
    assert limit.identity.requestsPerSecond == 20
    (override,) = limit.overrides
    assert override.limit.requestsPerSecond == 50
    assert [i.name for i in override.clients.identities] == [
        "batch.ns.serviceaccount.identity.gossamer.cluster.local",
        "ops.tools.serviceaccount.identity.gossamer.cluster.local",
    ]
    assert any("web-rl-2" in m for m in issues.messages)

    http1 = inbound_server(
        POD, 8080, lookups(server(proxyProtocol="HTTP/1"), older), SETTINGS, Issues()
    )
    assert http1.protocol.http1.local_rate_limit.total.requestsPerSecond == 100
    # An invalid policy (identity above total) is skipped and reported.
    bad = res(
        "HTTPLocalRateLimitPolicy",
        "bad",
        {
            "targetRef": {"kind": "Server", "name": "web-http"},
            "total": {"requestsPerSecond": 1},
            "identity": {"requestsPerSecond": 2},
        },
    )
    issues = Issues()
    out = inbound_server(POD, 8080, lookups(server(), bad), SETTINGS, issues)
    assert not out.protocol.detect.HasField("http_local_rate_limit")
    assert any("bad" in m for m in issues.messages)
    # No Server, no rate limit.
    default = inbound_server(POD, 8080, lookups(older), SETTINGS, Issues())
    assert not default.protocol.detect.HasField("http_local_rate_limit")


def test_namespace_targeted_policy_and_unauthenticated_access_policy() -> None:
    policy = res(
        "AuthorizationPolicy",
        "ns-wide",
        {
            "targetRef": {"kind": "Namespace", "name": "ns"},
            "requiredAuthenticationRefs": [{"kind": "ServiceAccount", "name": "client"}],
        },
    )
    out = inbound_server(
        POD, 8080, lookups(server(accessPolicy="all-unauthenticated"), policy), SETTINGS, Issues()
    )
    assert [a.labels["name"] for a in out.authorizations] == ["ns-wide", "all-unauthenticated"]


def test_http_routes_with_route_authorizations_and_a_bad_route() -> None:
    route = res(
        "HTTPRoute",
        "books",
        {
            "parentRefs": [{"group": "policy.linkerd.io", "kind": "Server", "name": "web-http"}],
            "hostnames": ["*.example.com"],
            "rules": [
                {
                    "matches": [
                        {
                            "path": {"type": "PathPrefix", "value": "/books"},
                            "method": "GET",
                            "headers": [{"name": "x-env", "value": "prod"}],
                        }
                    ],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"set": [{"name": "x-a", "value": "1"}]},
                        }
                    ],
                }
            ],
        },
        ts="2020-01-01T00:00:00Z",
    )
    bad = res(
        "HTTPRoute",
        "broken",
        {
            "parentRefs": [{"kind": "Server", "name": "web-http"}],
            "rules": [{"matches": [{"path": {"type": "RegularExpression", "value": "(("}}]}],
        },
        ts="2020-01-02T00:00:00Z",
    )
    policy = res(
        "AuthorizationPolicy",
        "books-authz",
        {
            "targetRef": {"group": "policy.linkerd.io", "kind": "HTTPRoute", "name": "books"},
            "requiredAuthenticationRefs": [{"kind": "ServiceAccount", "name": "client"}],
        },
    )
    issues = Issues()
    out = inbound_server(POD, 8080, lookups(server(), route, bad, policy), SETTINGS, issues)
    (r,) = out.protocol.detect.http_routes
    assert r.metadata.resource.name == "books"
    assert list(r.hosts[0].suffix.reverse_labels) == ["com", "example"]
    m = r.rules[0].matches[0]
    assert m.path.prefix == "/books"
    assert m.headers[0].exact == b"prod"
    assert r.rules[0].filters[0].request_header_modifier.set.headers[0].name == "x-a"
    assert r.authorizations[0].labels["name"] == "books-authz"
    assert any("broken" in msg for msg in issues.messages)


def test_outbound_default_service_policy() -> None:
    svc = t.service("web")
    out = service_policy(svc, 80, lookups(), lambda ns, n: True, SETTINGS, Issues())
    assert out.metadata.resource.kind == "Service"
    assert out.metadata.resource.port == 80
    detect = out.protocol.detect
    assert detect.timeout.seconds == 10
    backend = detect.http1.routes[0].rules[0].backends.first_available.backends[0].backend
    assert backend.balancer.discovery.dst.path == "web.ns.svc.cluster.local:80"
    assert backend.balancer.peak_ewma.default_rtt.ToMilliseconds() == 30
    assert backend.queue.capacity == 100
    assert backend.queue.failfast_timeout.seconds == 3


def test_outbound_undefined_port_opaque_and_routes() -> None:
    svc = t.service("web")
    undefined = service_policy(svc, 81, lookups(), lambda ns, n: True, SETTINGS, Issues())
    assert undefined.metadata.default == "undefined-port"
    assert undefined.protocol.opaque.routes[0].rules[0].filters[0].HasField("forbidden")
    db = t.service("db", ports=[{"port": 5432, "appProtocol": "linkerd.io/opaque"}])
    assert service_policy(
        db, 5432, lookups(), lambda ns, n: True, SETTINGS, Issues()
    ).protocol.HasField("opaque")
    route = res(
        "HTTPRoute",
        "split",
        {
            "parentRefs": [{"group": "core", "kind": "Service", "name": "web", "port": 80}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "web-v1", "port": 80, "weight": 90},
                        {"name": "web-v2", "port": 80, "weight": 10},
                    ],
                    "timeouts": {"request": "5s"},
                }
            ],
        },
    )
    out = service_policy(svc, 80, lookups(route), lambda ns, n: n != "web-v2", SETTINGS, Issues())
    rule = out.protocol.detect.http1.routes[0].rules[0]
    backends = rule.backends.random_available.backends
    assert [b.weight for b in backends] == [90, 10]
    assert (
        backends[0].backend.backend.balancer.discovery.dst.path == "web-v1.ns.svc.cluster.local:80"
    )
    assert backends[1].backend.filters[0].failure_injector.status == 500
    assert rule.timeouts.request.seconds == 5


def test_egress_fallback_forwards_to_the_original_destination() -> None:
    out = egress_fallback("8.8.8.8", 443)
    assert out.metadata.default == "egress-fallback"
    fwd = out.protocol.detect.opaque.routes[0].rules[0].backends.first_available.backends[0]
    assert fwd.backend.forward.addr.port == 443


def _accrual_service(**annotations: str) -> dict[str, Any]:
    svc = t.service("web")
    svc["metadata"]["annotations"] = annotations
    return svc


def test_consecutive_failure_accrual_from_annotations() -> None:
    svc = _accrual_service(
        **{
            "balancer.linkerd.io/failure-accrual": "consecutive",
            "balancer.linkerd.io/failure-accrual-consecutive-max-failures": "3",
            "balancer.linkerd.io/failure-accrual-consecutive-min-penalty": "500ms",
        }
    )
    issues = Issues()
    out = service_policy(svc, 80, lookups(), lambda ns, n: True, SETTINGS, issues)
    accrual = out.protocol.detect.http1.failure_accrual
    assert accrual.consecutive_failures.max_failures == 3
    assert accrual.consecutive_failures.backoff.min_backoff.ToMilliseconds() == 500
    assert accrual.consecutive_failures.backoff.max_backoff.seconds == 60
    assert out.protocol.detect.http2.failure_accrual == accrual
    assert issues.messages == []


def test_unified_failure_accrual_carries_the_success_rate() -> None:
    svc = _accrual_service(
        **{
            "balancer.linkerd.io/failure-accrual": "unified",
            "balancer.alpha.linkerd.io/failure-accrual-success-rate-threshold": "0.9",
            "balancer.alpha.linkerd.io/failure-accrual-success-rate-window": "1m",
        }
    )
    out = service_policy(svc, 80, lookups(), lambda ns, n: True, SETTINGS, Issues())
    unified = out.protocol.detect.http1.failure_accrual.unified
    assert unified.success_rate_threshold == 0.9
    assert unified.decay.seconds == 60
    assert unified.min_requests == 20
    assert unified.max_consecutive_failures == 7
    assert unified.backoff.jitter_ratio == 0.5


def test_invalid_failure_accrual_annotations_are_reported_and_disable_accrual() -> None:
    for given in (
        {"balancer.linkerd.io/failure-accrual": "sometimes"},
        {
            "balancer.linkerd.io/failure-accrual": "consecutive",
            "balancer.linkerd.io/failure-accrual-consecutive-max-failures": "many",
        },
        {
            "balancer.linkerd.io/failure-accrual": "unified",
            "balancer.alpha.linkerd.io/failure-accrual-success-rate-threshold": "1.5",
        },
        {
            "balancer.linkerd.io/failure-accrual": "consecutive",
            "balancer.linkerd.io/failure-accrual-consecutive-min-penalty": "2m",
        },
    ):
        issues = Issues()
        out = service_policy(
            _accrual_service(**given), 80, lookups(), lambda ns, n: True, SETTINGS, issues
        )
        assert not out.protocol.detect.http1.HasField("failure_accrual"), given
        assert len(issues.messages) == 1, given
        assert "Service ns/web" in issues.messages[0]
