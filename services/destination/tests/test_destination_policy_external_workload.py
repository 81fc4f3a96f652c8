"""Inbound policy for an ExternalWorkload's proxy: Server selection by
``externalWorkloadSelector``, authorizations, default policy, and ``WatchPort`` on the wire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from gossamer_api.proxy import inbound_pb2, inbound_pb2_grpc
from gossamer_destination import testing as t
from gossamer_destination.app import DestinationApp
from gossamer_destination.external_workloads import parse_external_workload
from gossamer_destination.policy_inbound import (
    PolicyLookups,
    external_workload,
    inbound_server,
    workload_inbound_server,
)
from gossamer_destination.profiles import Issues
from gossamer_destination.settings import DestinationSettings
from gossamer_destination.testing import memory_sources

SETTINGS = DestinationSettings()
TIMEOUT = 10.0
CLIENT = "client.ns.serviceaccount.identity.gossamer.cluster.local"
POD = t.pod("web-1", "10.1.0.1", container_ports=[{"name": "http", "containerPort": 8080}])


def workload(labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "workload.linkerd.io/v1beta1",
        "kind": "ExternalWorkload",
        "metadata": {"name": "vm-1", "namespace": "ns", "labels": labels or {"app": "billing"}},
        "spec": {
            "meshTLS": {
                "identity": "spiffe://example.org/vm/billing",
                "serverName": "billing.vm.example.org",
            },
            "workloadIPs": [{"ip": "192.0.2.10"}],
            "ports": [{"name": "http", "port": 8080}, {"name": "linkerd-proxy", "port": 4143}],
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def res(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": "ns"}, "spec": spec}


def lookups(*objs: dict[str, Any]) -> PolicyLookups:
    def of(kind: str, ns: str) -> list[dict[str, Any]]:
        return [o for o in objs if o["kind"] == kind and o["metadata"].get("namespace") == ns]

    def named(kind: str, ns: str, name: str) -> dict[str, Any] | None:
        return next((o for o in of(kind, ns) if o["metadata"]["name"] == name), None)

    return PolicyLookups(
        namespace=lambda n: next(
            (o for o in objs if o["kind"] == "Namespace" and o["metadata"]["name"] == n), None
        ),
        servers=lambda ns: of("Server", ns),
        authorization_policies=lambda ns: of("AuthorizationPolicy", ns),
        meshtls_authentication=lambda ns, n: named("MeshTLSAuthentication", ns, n),
        network_authentication=lambda ns, n: named("NetworkAuthentication", ns, n),
        http_routes=lambda ns: of("HTTPRoute", ns),
        server_authorizations=lambda ns: of("ServerAuthorization", ns),
        rate_limit_policies=lambda ns: of("HTTPLocalRateLimitPolicy", ns),
    )


def ew_server(name: str = "billing-http", port: Any = 8080, **spec: Any) -> dict[str, Any]:
    selector = {"externalWorkloadSelector": {"matchLabels": {"app": "billing"}}}
    return res("Server", name, {**selector, "port": port, **spec})


def allow_client(target: str = "billing-http") -> list[dict[str, Any]]:
    policy = res(
        "AuthorizationPolicy",
        "billing-clients",
        {
            "targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": target},
            "requiredAuthenticationRefs": [
                {"group": "policy.linkerd.io", "kind": "MeshTLSAuthentication", "name": "client"}
            ],
        },
    )
    mtls = res(
        "MeshTLSAuthentication",
        "client",
        {"identityRefs": [{"kind": "ServiceAccount", "name": "client"}]},
    )
    return [policy, mtls]


def for_workload(
    obj: dict[str, Any], port: int, *objs: dict[str, Any], issues: Issues | None = None
) -> inbound_pb2.Server:
    target = external_workload(obj, parse_external_workload(obj), SETTINGS)
    return workload_inbound_server(target, port, lookups(*objs), SETTINGS, issues or Issues())


def test_a_server_selecting_the_external_workload_applies_with_its_authorization() -> None:
    out = for_workload(workload(), 8080, ew_server(), *allow_client())
    assert dict(out.labels) == {
        "group": "policy.linkerd.io",
        "kind": "server",
        "name": "billing-http",
    }
    (authz,) = out.authorizations
    assert authz.labels["name"] == "billing-clients"
    assert [i.name for i in authz.authentication.meshTLS.identities.identities] == [CLIENT]
    (route,) = out.protocol.detect.http_routes
    assert [a.labels["name"] for a in route.authorizations] == ["billing-clients"]


def test_a_named_server_port_resolves_in_the_workload_ports() -> None:
    out = for_workload(workload(), 8080, ew_server(port="http"))
    assert out.labels["name"] == "billing-http"
    other = for_workload(workload(), 9090, ew_server(port="http"))
    assert other.labels["kind"] == "default"


def test_pod_selectors_and_workload_selectors_do_not_cross() -> None:
    pod_server = res(
        "Server", "by-pod", {"podSelector": {"matchLabels": {"app": "billing"}}, "port": 8080}
    )
    assert for_workload(workload(), 8080, pod_server).labels["kind"] == "default"
    web_ew_server = res(
        "Server",
        "by-ew",
        {"externalWorkloadSelector": {"matchLabels": {"app": "web"}}, "port": 8080},
    )
    assert inbound_server(POD, 8080, lookups(web_ew_server), SETTINGS, Issues()).labels["kind"] == (
        "default"
    )


def test_a_server_with_both_selectors_or_neither_is_ignored_and_reported() -> None:
    both = ew_server(name="both", podSelector={"matchLabels": {"app": "billing"}})
    neither = res("Server", "neither", {"port": 8080})
    issues = Issues()
    out = for_workload(workload(), 8080, both, neither, issues=issues)
    assert out.labels["kind"] == "default"
    text = "\n".join(issues.messages)
    assert "ns/both: needs exactly one of podSelector and externalWorkloadSelector" in text
    assert "ns/neither" in text


def test_default_policy_comes_from_the_workload_then_namespace_then_cluster() -> None:
    plain = workload()
    assert for_workload(plain, 8080).labels["name"] == SETTINGS.default_inbound_policy
    ns = t.namespace("ns", annotations={"config.linkerd.io/default-inbound-policy": "deny"})
    denied = for_workload(plain, 8080, ns)
    assert denied.labels["name"] == "deny"
    assert not denied.authorizations
    annotated = workload()
    annotated["metadata"]["annotations"] = {
        "config.linkerd.io/default-inbound-policy": "all-unauthenticated",
        "config.linkerd.io/proxy-require-identity-inbound-ports": "http",
        "config.linkerd.io/opaque-ports": "5432",
    }
    required = for_workload(annotated, 8080, ns)
    assert required.labels["name"] == "all-authenticated"
    # No probe route: an external workload has no kubelet probing it.
    assert [r.metadata.default for r in required.protocol.detect.http_routes] == ["default"]
    assert for_workload(annotated, 9090, ns).labels["name"] == "all-unauthenticated"
    assert for_workload(annotated, 5432, ns).protocol.WhichOneof("kind") == "opaque"


@pytest.fixture
async def inbound() -> AsyncIterator[tuple[Any, Any]]:
    sources = memory_sources(t.namespace("ns"), t.pod("web-1", "10.1.0.1"))
    settings = DestinationSettings(
        grpc_addr="127.0.0.1:0", policy_addr="", admin_addr="127.0.0.1:0"
    )
    app = DestinationApp(settings, dict(sources))  # type: ignore[arg-type]
    await asyncio.wait_for(app.start(), TIMEOUT)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    try:
        yield inbound_pb2_grpc.InboundServerPoliciesStub(channel), sources
    finally:
        await channel.close()
        await app.stop(grace=0)


async def read(call: Any) -> Any:
    return await asyncio.wait_for(call.read(), TIMEOUT)


async def test_watch_port_for_an_external_workload_follows_servers_and_labels(
    inbound: tuple[Any, Any],
) -> None:
    stub, sources = inbound
    spec = inbound_pb2.PortSpec(workload='{"ns":"ns","external_workload":"vm-1"}', port=8080)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetPort(spec, timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    sources["externalworkloads"].apply(workload())
    call = stub.WatchPort(spec)
    first = await read(call)
    while first.labels["kind"] != "default":  # pragma: no cover - before the watch event
        first = await read(call)
    policy, mtls = allow_client()
    sources["meshtlsauthentications"].apply(mtls)
    sources["authorizationpolicies"].apply(policy)
    sources["servers"].apply(ew_server())
    update = await read(call)
    while not (update.labels["kind"] == "server" and update.authorizations):
        update = await read(call)
    assert [a.labels["name"] for a in update.authorizations] == ["billing-clients"]
    # Relabelled so the Server no longer selects it: back to the default policy.
    sources["externalworkloads"].apply(workload(labels={"app": "other"}))
    back = await read(call)
    while back.labels["kind"] != "default":
        back = await read(call)
    call.cancel()
