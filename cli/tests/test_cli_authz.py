"""``gossamer authz``: which Servers and authorizations apply to a workload's pods."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from gossamer_cli import authz
from gossamer_cli.main import cli

POD = yaml.safe_load("""
metadata: {name: web-1, labels: {app: web}}
spec:
  containers:
    - name: web
      ports: [{name: http, containerPort: 8080}, {name: admin, containerPort: 9990}]
    - name: linkerd-proxy
      ports: [{name: linkerd-admin, containerPort: 4191}]
      env: [{name: LINKERD2_PROXY_INBOUND_DEFAULT_POLICY, value: cluster-authenticated}]
""")


def pod(**metadata: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(POD))
    copy["metadata"].update(metadata)
    return dict(copy)


def server(name: str, port: Any, selector: dict[str, Any], **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy.linkerd.io/v1beta3",
        "metadata": {"name": name, "labels": labels},
        "spec": {"podSelector": selector, "port": port},
    }


def policy(
    name: str, kind: str, target: str, *refs: tuple[str, str], group: str | None = None
) -> dict[str, Any]:
    target_ref = {"kind": kind, "name": target}
    if group is not None:
        target_ref["group"] = group
    required = [{"kind": k, "name": n, "group": "policy.linkerd.io"} for k, n in refs]
    return {
        "metadata": {"name": name},
        "spec": {"targetRef": target_ref, "requiredAuthenticationRefs": required},
    }


def named(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}}


OBJECTS = authz.PolicyObjects(
    servers=[
        server("web-http", "http", {"matchLabels": {"app": "web"}}, tier="front"),
        server("other-app", 8080, {"matchLabels": {"app": "other"}}, tier="front"),
        server("web-grpc", "grpc", {"matchLabels": {"app": "web"}}),  # no container port "grpc"
    ],
    authorization_policies=[
        policy("web-public", "Server", "web-http", ("NetworkAuthentication", "all"),
               group="policy.linkerd.io"),
        policy("web-mesh", "Server", "web-http", ("MeshTLSAuthentication", "clients"),
               ("MeshTLSAuthentication", "ghosts")),
        policy("ns-wide", "Namespace", "emojivoto", ("ServiceAccount", "prom")),
        policy("books-route", "HTTPRoute", "books", ("MeshTLSAuthentication", "clients"),
               group="policy.linkerd.io"),
        policy("other-ns", "Namespace", "elsewhere"),
        policy("for-other", "Server", "other-app"),
    ],
    server_authorizations=yaml.safe_load("""
- metadata: {name: legacy-by-name}
  spec: {server: {name: web-http}, client: {unauthenticated: true}}
- metadata: {name: legacy-by-label}
  spec:
    server:
      selector: {matchExpressions: [{key: tier, operator: In, values: [front]}]}
    client:
      meshTLS: {serviceAccounts: [{name: vote, namespace: emojivoto}]}
      networks: [{cidr: 10.0.0.0/8}]
"""),
    http_routes=yaml.safe_load("""
- apiVersion: policy.linkerd.io/v1beta3
  metadata: {name: books}
  spec: {parentRefs: [{kind: Server, name: web-http, group: policy.linkerd.io}]}
- apiVersion: gateway.networking.k8s.io/v1
  metadata: {name: books}
  spec: {parentRefs: [{kind: Service, name: web, group: core}]}
"""),
    meshtls_authentications=[named("clients")],
    network_authentications=[named("all")],
    namespace={"metadata": {"name": "emojivoto"}},
)  # fmt: skip


def test_rows_cover_policies_legacy_authorizations_routes_and_the_default() -> None:
    rows = authz.authorizations([pod()], OBJECTS, "emojivoto")
    table = [(r.route, r.server, r.authorization_policy, r.server_authorization) for r in rows]
    assert table == [
        ("*", "web-http", "", "legacy-by-label"),
        ("*", "web-http", "", "legacy-by-name"),
        ("*", "web-http", "ns-wide", ""),
        ("*", "web-http", "web-mesh", ""),
        ("*", "web-http", "web-public", ""),
        ("books", "web-http", "books-route", ""),
        # 9990 has no Server: the proxy's default policy applies there.
        ("default", "default:cluster-authenticated", "default:cluster-authenticated", ""),
    ]
    auth = {(r.authorization_policy or r.server_authorization): r.authentications for r in rows}
    assert auth["web-mesh"] == (
        "MeshTLSAuthentication/clients",
        "MeshTLSAuthentication/ghosts (missing)",
    )
    assert auth["legacy-by-label"] == ("ServiceAccount/emojivoto/vote", "network:10.0.0.0/8")
    assert auth["legacy-by-name"] == ("unauthenticated",)


def test_fully_covered_pods_have_no_default_row_and_the_annotation_wins() -> None:
    covered = authz.PolicyObjects(
        servers=[server("all-web", 8080, {}), server("admin", "admin", {"matchLabels": {}})]
    )
    assert [r.route for r in authz.authorizations([pod()], covered, "ns")] == []
    annotated = pod(annotations={"config.linkerd.io/default-inbound-policy": "deny"})
    (row,) = authz.authorizations([annotated], authz.PolicyObjects(), "ns")
    assert row.server == "default:deny"
    bare = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app"}]}}
    ns = {"metadata": {"annotations": {"config.linkerd.io/default-inbound-policy": "audit"}}}
    (row,) = authz.authorizations([bare], authz.PolicyObjects(namespace=ns), "ns")
    assert row.server == "default:audit"
    (row,) = authz.authorizations([bare], authz.PolicyObjects(), "ns")
    assert row.server == "default:all-unauthenticated"


@pytest.mark.parametrize(
    ("selector", "labels", "selected"),
    [
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {}, True),
    ],
)
def test_label_selectors(selector: dict[str, Any], labels: dict[str, str], selected: bool) -> None:
    assert authz.selector_matches(selector, labels) is selected


def test_a_bad_selector_operator_is_an_error() -> None:
    with pytest.raises(authz.SelectorError, match="unknown label selector operator 'Near'"):
        authz.selector_matches({"matchExpressions": [{"key": "a", "operator": "Near"}]}, {})


def test_table_has_linkerds_columns_and_wide_adds_authentications() -> None:
    rows = authz.authorizations([pod()], OBJECTS, "emojivoto")
    lines = authz.render_table(rows).splitlines()
    assert lines[0].split() == ["ROUTE", "SERVER", "AUTHORIZATION_POLICY", "SERVER_AUTHORIZATION"]
    default = "default:cluster-authenticated"
    assert lines[-1].split() == ["default", default, default]
    wide = authz.render_table(rows, wide=True).splitlines()
    assert wide[0].split()[-1] == "AUTHENTICATIONS"
    assert any("NetworkAuthentication/all" in line for line in wide)
    parsed = json.loads(authz.render_json(rows))
    assert parsed[0]["server"] == "web-http"
    assert isinstance(parsed[0]["authentications"], list)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("web",), "'web' is not TYPE/NAME"),
        (("svc/web",), "unsupported resource type 'svc'"),
        (("deploy/web", "-o", "yaml"), "'yaml' is not one of 'table', 'wide', 'json'"),
    ],
)
def test_bad_arguments_fail_before_any_connection(args: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(cli, ["authz", *args], env={"KUBECONFIG": "/nonexistent"})
    assert result.exit_code == 2
    assert message in result.output
