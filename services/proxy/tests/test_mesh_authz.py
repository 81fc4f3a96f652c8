"""Inbound authorization: Server protos, default policies, routes and metrics."""

from __future__ import annotations

import ipaddress

import pytest
from google.protobuf.duration_pb2 import Duration
from gossamer_api.addresses import ip_network_to_proto
from gossamer_api.proxy import (
    grpc_route_pb2,
    http_route_pb2,
    inbound_pb2,
    meta_pb2,
)
from gossamer_common.metrics import Registry
from gossamer_proxy.mesh.authz import (
    ClientInfo,
    PolicyError,
    Verdict,
    authorize_http,
    authorize_tcp,
    compile_server,
    default_policy,
)
from gossamer_proxy.mesh.authz_metrics import AuthzMetrics
from gossamer_proxy.mesh.request import RequestView
from gossamer_proxy.mesh.tls_labels import inbound_tls_labels, outbound_tls_labels

ID = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"
PLAIN = ClientInfo(ipaddress.ip_address("10.1.0.5"))
OUTSIDE = ClientInfo(ipaddress.ip_address("8.8.8.8"))
MESHED = ClientInfo(ipaddress.ip_address("10.1.0.6"), tls=True, identity=ID)
TLS_NO_ID = ClientInfo(ipaddress.ip_address("10.1.0.7"), tls=True)


def network(cidr: str, *excepts: str) -> inbound_pb2.Network:
    message = inbound_pb2.Network(net=ip_network_to_proto(cidr))
    getattr(message, "except").extend(ip_network_to_proto(e) for e in excepts)
    return message


def meta(kind: str, name: str) -> meta_pb2.Metadata:
    return meta_pb2.Metadata(
        resource=meta_pb2.Resource(group="policy.linkerd.io", kind=kind, name=name)
    )


def authz_mesh(name: str, identities: list[str] = (), suffixes: list[list[str]] = ()):  # type: ignore[assignment,no-untyped-def]
    ids = inbound_pb2.Authn.PermitMeshTLS.PermitClientIdentities(
        identities=[inbound_pb2.Identity(name=i) for i in identities],
        suffixes=[inbound_pb2.IdentitySuffix(parts=s) for s in suffixes],
    )
    authn = inbound_pb2.Authn(meshTLS=inbound_pb2.Authn.PermitMeshTLS(identities=ids))
    return inbound_pb2.Authz(
        networks=[network("0.0.0.0/0"), network("::/0")],
        authentication=authn,
        metadata=meta("authorizationpolicy", name),
    )


def server(*authz: inbound_pb2.Authz, routes: list[inbound_pb2.HttpRoute] = ()):  # type: ignore[assignment,no-untyped-def]
    return inbound_pb2.Server(
        protocol=inbound_pb2.ProxyProtocol(
            detect=inbound_pb2.ProxyProtocol.Detect(
                timeout=Duration(seconds=5), http_routes=list(routes)
            )
        ),
        authorizations=list(authz),
        labels={"group": "policy.linkerd.io", "kind": "server", "name": "web-http"},
    )


def req(path: str, method: str = "GET") -> RequestView:
    return RequestView.from_target(method, path, authority="web:80")


def test_default_all_unauthenticated_allows_everyone() -> None:
    policy = default_policy("all-unauthenticated")
    decision = authorize_tcp(policy, OUTSIDE)
    assert decision.allowed
    assert decision.labels() == {
        "srv_group": "",
        "srv_kind": "default",
        "srv_name": "all-unauthenticated",
        "authz_group": "",
        "authz_kind": "default",
        "authz_name": "all-unauthenticated",
    }
    http = authorize_http(policy, PLAIN, req("/anything"))
    assert http.allowed
    assert http.route is not None
    assert http.route.name == "default"


def test_default_authenticated_and_cluster_policies() -> None:
    authenticated = default_policy("all-authenticated")
    assert not authorize_tcp(authenticated, PLAIN).allowed
    assert not authorize_tcp(authenticated, TLS_NO_ID).allowed
    assert authorize_tcp(authenticated, MESHED).allowed
    cluster = default_policy("cluster-unauthenticated", cluster_networks=["10.0.0.0/8"])
    assert authorize_tcp(cluster, PLAIN).allowed
    assert not authorize_tcp(cluster, OUTSIDE).allowed
    mapped = ClientInfo(ipaddress.ip_address("::ffff:10.1.0.5"))
    assert authorize_tcp(cluster, mapped).allowed
    cluster_auth = default_policy("cluster-authenticated", cluster_networks=["10.0.0.0/8"])
    assert authorize_tcp(cluster_auth, MESHED).allowed
    assert not authorize_tcp(cluster_auth, PLAIN).allowed


def test_deny_and_audit_defaults() -> None:
    deny = default_policy("deny")
    assert authorize_tcp(deny, MESHED).verdict is Verdict.DENY
    assert authorize_http(deny, MESHED, req("/")).verdict is Verdict.DENY
    audit = default_policy("audit")
    decision = authorize_tcp(audit, OUTSIDE)
    assert decision.allowed


def test_require_identity_and_opaque_defaults() -> None:
    policy = default_policy("all-unauthenticated", require_identity=True, opaque=True)
    assert policy.protocol == "opaque"
    assert not policy.is_http
    assert not authorize_tcp(policy, PLAIN).allowed
    assert authorize_tcp(policy, MESHED).allowed


def test_unknown_default_policy_is_a_clear_error() -> None:
    with pytest.raises(PolicyError, match="unknown default inbound policy 'allow-all'"):
        default_policy("allow-all")


def test_server_with_mesh_identities_and_suffixes() -> None:
    policy = compile_server(
        server(
            authz_mesh("exact", identities=["other.ns.serviceaccount.identity.x.y"]),
            authz_mesh(
                "suffix",
                suffixes=[
                    ["emojivoto", "serviceaccount", "identity", "gossamer", "cluster", "local"]
                ],
            ),
        )
    )
    assert policy.detect_timeout == 5.0
    assert policy.meta.name == "web-http"
    decision = authorize_tcp(policy, MESHED)
    assert decision.allowed
    assert decision.authz is not None
    assert decision.authz.name == "suffix"
    other = ClientInfo(
        ipaddress.ip_address("10.0.0.1"), True, "other.ns.serviceaccount.identity.x.y"
    )
    assert authorize_tcp(policy, other).authz.name == "exact"  # type: ignore[union-attr]
    stranger = ClientInfo(
        ipaddress.ip_address("10.0.0.1"), True, "x.other.serviceaccount.identity.x.y"
    )
    assert not authorize_tcp(policy, stranger).allowed
    assert not authorize_tcp(policy, PLAIN).allowed


def test_networks_with_except_and_authz_without_networks_is_ignored() -> None:
    unauth = inbound_pb2.Authn(unauthenticated=inbound_pb2.Authn.PermitUnauthenticated())
    policy = compile_server(
        server(
            inbound_pb2.Authz(authentication=unauth, metadata=meta("x", "no-networks")),
            inbound_pb2.Authz(
                networks=[network("10.0.0.0/8", "10.1.0.0/16")],
                authentication=unauth,
                metadata=meta("networkauthentication", "ten"),
            ),
        )
    )
    assert len(policy.authorizations) == 1
    assert not authorize_tcp(policy, PLAIN).allowed  # 10.1.0.5 is in the except
    assert authorize_tcp(policy, ClientInfo(ipaddress.ip_address("10.2.0.1"))).allowed


def test_empty_authorizations_deny_everything() -> None:
    policy = compile_server(server())
    assert not authorize_tcp(policy, MESHED).allowed
    assert authorize_http(policy, MESHED, req("/")).verdict is Verdict.DENY


def test_tls_unauthenticated_permits_any_tls_client() -> None:
    authn = inbound_pb2.Authn(
        meshTLS=inbound_pb2.Authn.PermitMeshTLS(
            unauthenticated=inbound_pb2.Authn.PermitUnauthenticated()
        )
    )
    policy = compile_server(
        server(inbound_pb2.Authz(networks=[network("0.0.0.0/0")], authentication=authn))
    )
    assert authorize_tcp(policy, TLS_NO_ID).allowed
    assert not authorize_tcp(policy, PLAIN).allowed


def test_http_routes_authorize_per_route_and_404_when_unrouted() -> None:
    unauth = inbound_pb2.Authz(
        networks=[network("0.0.0.0/0")],
        authentication=inbound_pb2.Authn(unauthenticated=inbound_pb2.Authn.PermitUnauthenticated()),
        metadata=meta("authorizationpolicy", "probes"),
    )
    probe = inbound_pb2.HttpRoute(
        metadata=meta_pb2.Metadata(default="probe"),
        rules=[
            inbound_pb2.HttpRoute.Rule(
                matches=[
                    http_route_pb2.HttpRouteMatch(path=http_route_pb2.PathMatch(exact="/ready"))
                ]
            )
        ],
        authorizations=[unauth],
    )
    api = inbound_pb2.HttpRoute(
        metadata=meta("httproute", "api"),
        rules=[
            inbound_pb2.HttpRoute.Rule(
                matches=[
                    http_route_pb2.HttpRouteMatch(path=http_route_pb2.PathMatch(prefix="/api"))
                ]
            )
        ],
        authorizations=[authz_mesh("meshed", suffixes=[[]])],
    )
    policy = compile_server(server(routes=[probe, api]))
    ready = authorize_http(policy, PLAIN, req("/ready"))
    assert ready.allowed
    assert ready.route is not None
    assert ready.route.name == "probe"
    denied = authorize_http(policy, PLAIN, req("/api/x"))
    assert denied.verdict is Verdict.DENY
    assert denied.route is not None
    assert denied.route.name == "api"
    assert authorize_http(policy, MESHED, req("/api/x")).allowed
    assert authorize_http(policy, MESHED, req("/other")).verdict is Verdict.ROUTE_NOT_FOUND


def test_grpc_routes_match_service_and_method() -> None:
    route = inbound_pb2.GrpcRoute(
        metadata=meta("grpcroute", "get-user"),
        rules=[
            inbound_pb2.GrpcRoute.Rule(
                matches=[
                    grpc_route_pb2.GrpcRouteMatch(
                        rpc=grpc_route_pb2.GrpcRpcMatch(service="users.Users", method="Get")
                    )
                ]
            )
        ],
        authorizations=[authz_mesh("any", suffixes=[[]])],
    )
    message = inbound_pb2.Server(
        protocol=inbound_pb2.ProxyProtocol(grpc=inbound_pb2.ProxyProtocol.Grpc(routes=[route]))
    )
    policy = compile_server(message)
    assert authorize_http(policy, MESHED, req("/users.Users/Get", "POST")).allowed
    assert authorize_http(policy, MESHED, req("/users.Users/Delete", "POST")).verdict is (
        Verdict.ROUTE_NOT_FOUND
    )


def test_bad_servers_raise_policy_error() -> None:
    with pytest.raises(PolicyError, match="no protocol"):
        compile_server(inbound_pb2.Server())
    bad_route = inbound_pb2.HttpRoute(
        rules=[
            inbound_pb2.HttpRoute.Rule(
                matches=[http_route_pb2.HttpRouteMatch(path=http_route_pb2.PathMatch(regex="(x"))]
            )
        ]
    )
    with pytest.raises(PolicyError, match="invalid route"):
        compile_server(server(routes=[bad_route]))
    no_authn = inbound_pb2.Authz(networks=[network("0.0.0.0/0")])
    with pytest.raises(PolicyError, match="no authentication"):
        compile_server(server(no_authn))


def test_decisions_are_counted_in_linkerd_metrics() -> None:
    registry = Registry()
    metrics = AuthzMetrics(registry)
    policy = default_policy("all-authenticated")
    for client in (MESHED, PLAIN):
        metrics.record(
            authorize_tcp(policy, client),
            http=False,
            port=8080,
            target_addr="10.1.0.9:8080",
            tls=client.tls,
            client_id=client.identity,
        )
    metrics.record(
        authorize_http(policy, MESHED, req("/")),
        http=True,
        port=8080,
        target_addr="10.1.0.9:8080",
        tls=True,
        client_id=ID,
    )
    text = registry.render().decode()
    assert (
        'inbound_tcp_authz_allow_total{srv_kind="default",srv_name="all-authenticated",srv_port="8080"'
        in text
    )
    assert f'client_id="{ID}"' in text
    assert (
        'inbound_tcp_authz_deny_total{srv_kind="default",'
        'srv_name="all-authenticated",srv_port="8080",target_addr="10.1.0.9:8080",'
        'tls="no_identity",no_tls_reason="no_tls_from_remote"} 1' in text
    )
    assert "inbound_http_authz_allow_total{" in text
    assert 'route_name="default"' in text


def test_tls_labels_follow_linkerd() -> None:
    assert inbound_tls_labels(tls=True, client_id=ID) == {"tls": "true", "client_id": ID}
    assert inbound_tls_labels(tls=False) == {
        "tls": "no_identity",
        "no_tls_reason": "no_tls_from_remote",
    }
    assert inbound_tls_labels(tls=True, passthrough_sni="x.example") == {
        "tls": "opaque",
        "sni": "x.example",
    }
    assert outbound_tls_labels(server_id=ID) == {"tls": "true", "server_id": ID}
    assert outbound_tls_labels(server_id=None)["no_tls_reason"] == (
        "not_provided_by_service_discovery"
    )
    assert outbound_tls_labels(server_id=ID, identity_disabled=True) == {"tls": "disabled"}


def test_absolute_form_target_is_authorized_by_its_own_authority() -> None:
    """``GET http://admin.internal/x`` with ``Host: public.example`` is not public (issue 16)."""
    import ipaddress as _ip

    from gossamer_proxy.errors import ProxyErrorKind
    from gossamer_proxy.inbound_authz import InboundPeer

    unauth = inbound_pb2.Authz(
        networks=[network("0.0.0.0/0")],
        authentication=inbound_pb2.Authn(unauthenticated=inbound_pb2.Authn.PermitUnauthenticated()),
        metadata=meta("authorizationpolicy", "public"),
    )
    public = inbound_pb2.HttpRoute(
        metadata=meta("httproute", "public"),
        hosts=[http_route_pb2.HostMatch(exact="public.example")],
        rules=[inbound_pb2.HttpRoute.Rule(matches=[http_route_pb2.HttpRouteMatch()])],
        authorizations=[unauth],
    )
    peer = InboundPeer(
        ClientInfo(_ip.ip_address("10.1.0.5")),
        compile_server(server(routes=[public])),
        8080,
        "10.1.0.9:8080",
        None,
    )
    assert peer.check_http(b"GET", b"/x", b"public.example", [], 0.0) is None
    denied = peer.check_http(b"GET", b"http://admin.internal/x", b"public.example", [], 0.0)
    assert denied is not None
    assert denied.kind is ProxyErrorKind.ROUTE_NOT_FOUND
