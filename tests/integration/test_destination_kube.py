"""The destination service as a real process against the real kube-apiserver.

Acceptance for issue 5: Deployment scaling reaches an open ``Get`` stream as adds and
removes, a deleted and re-created Service is followed, ServiceProfile and policy changes
reach open ``GetProfile`` and ``WatchPort`` streams, and invalid resources are skipped
without breaking a stream. EgressNetworks and the HTTPRoutes parented to them reach an open
outbound ``Watch`` for an address outside the cluster.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from gossamer_api.proxy import (
    destination_pb2,
    destination_pb2_grpc,
    inbound_pb2,
    inbound_pb2_grpc,
    net_pb2,
    outbound_pb2,
    outbound_pb2_grpc,
)
from gossamer_destination.testing_cluster import DestinationProcess, EndpointView, apply_crds
from gossamer_destination.wire import ip_address
from gossamer_kube.client import KubeClient
from gossamer_kube.resources import (
    AUTHORIZATIONPOLICIES,
    DEPLOYMENTS,
    EGRESSNETWORKS,
    HTTPLOCALRATELIMITPOLICIES,
    HTTPROUTES,
    MESHTLSAUTHENTICATIONS,
    PODS,
    SERVERAUTHORIZATIONS,
    SERVERS,
    SERVICEPROFILES,
    SERVICES,
)
from gossamer_kube.testing import KubeTestCluster

WAIT = 60.0
T = TypeVar("T")


@pytest.fixture
def destination(kube_cluster: KubeTestCluster, tmp_path: Path) -> Iterator[DestinationProcess]:
    apply_crds(kube_cluster.admin())
    proc = DestinationProcess(kube_cluster.kubeconfig, tmp_path / "destination.log")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def channel(destination: DestinationProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{destination.grpc_port}") as ch:
        yield ch


async def until(what: str, probe: Callable[[], Awaitable[T | None]], limit: float = WAIT) -> T:
    deadline = time.monotonic() + limit
    while True:
        value = await probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def first_message(open_call: Callable[[], Any]) -> tuple[Any, Any]:
    """Open a stream and read its first message, re-opening on NOT_FOUND/UNKNOWN as the proxy
    does: the service's informer may see an object a moment after the apiserver returned."""
    deadline = time.monotonic() + WAIT
    while True:
        call = open_call()
        try:
            return call, await asyncio.wait_for(call.read(), WAIT)
        except grpc.aio.AioRpcError as exc:
            retryable = exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNKNOWN)
            if not retryable or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def deployment(name: str, replicas: int, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": {**labels, "linkerd.io/control-plane-ns": "gossamer"},
                },
                "spec": {
                    "serviceAccountName": "default",
                    "containers": [
                        {
                            "name": "web",
                            "image": "registry.invalid/web:1",
                            "ports": [{"name": "http", "containerPort": 8080}],
                        }
                    ],
                },
            },
        },
    }


def service(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": labels,
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


async def running_pod_ips(client: KubeClient, ns: str, selector: str, n: int) -> set[str] | None:
    pods, _ = await client.list(PODS, ns, label_selector=selector)
    ips = {
        p["status"]["podIP"]
        for p in pods
        if p.get("status", {}).get("phase") == "Running"
        and p["status"].get("podIP")
        and not p["metadata"].get("deletionTimestamp")
    }
    return ips if len(ips) == n else None


async def test_deployment_scaling_streams_adds_and_removes(
    destination: DestinationProcess,
    channel: grpc.aio.Channel,
    kube_client: KubeClient,
    kube_namespace: str,
) -> None:
    ns = kube_namespace
    labels = {"app": "web"}
    await kube_client.create(SERVICES, service("web", labels), ns)
    await kube_client.create(DEPLOYMENTS, deployment("web", 3, labels), ns)
    await until("3 pods", lambda: running_pod_ips(kube_client, ns, "app=web", 3))

    stub = destination_pb2_grpc.DestinationStub(channel)
    token = f'{{"ns":"{ns}", "nodeName":"kwok-node-0", "pod":"client"}}'
    view = EndpointView(
        stub.Get(
            destination_pb2.GetDestination(
                path=f"web.{ns}.svc.cluster.local:80", context_token=token
            )
        )
    )
    await view.until_size(3)
    wa = next(iter(view.addrs.values()))
    assert wa.addr.port == 8080  # named targetPort resolved
    assert wa.tls_identity.dns_like_identity.name == (
        f"default.{ns}.serviceaccount.identity.gossamer.cluster.local"
    )
    assert wa.protocol_hint.WhichOneof("protocol") == "h2"
    assert wa.protocol_hint.opaque_transport.inbound_port == 4143
    assert wa.metric_labels["deployment"] == "web"
    assert wa.metric_labels["serviceaccount"] == "default"

    await kube_client.patch(DEPLOYMENTS, "web", {"spec": {"replicas": 5}}, ns)
    ips5 = await until("5 pods", lambda: running_pod_ips(kube_client, ns, "app=web", 5))
    await view.until_size(5)
    assert {ip for ip, _ in view.addrs} == ips5

    await kube_client.patch(DEPLOYMENTS, "web", {"spec": {"replicas": 1}}, ns)
    await view.until_size(1)
    ips1 = await until("1 pod", lambda: running_pod_ips(kube_client, ns, "app=web", 1))
    assert {ip for ip, _ in view.addrs} == ips1
    kinds = [m.WhichOneof("update") for m in view.messages]
    assert "remove" in kinds
    assert "no_endpoints" not in kinds
    view.call.cancel()


async def test_deleted_and_recreated_service_is_followed(
    destination: DestinationProcess,
    channel: grpc.aio.Channel,
    kube_client: KubeClient,
    kube_namespace: str,
) -> None:
    ns = kube_namespace
    labels = {"app": "api"}
    await kube_client.create(SERVICES, service("api", labels), ns)
    await kube_client.create(DEPLOYMENTS, deployment("api", 2, labels), ns)
    await until("2 pods", lambda: running_pod_ips(kube_client, ns, "app=api", 2))
    stub = destination_pb2_grpc.DestinationStub(channel)
    view = EndpointView(
        stub.Get(destination_pb2.GetDestination(path=f"api.{ns}.svc.cluster.local:80"))
    )
    await view.until_size(2)
    await kube_client.delete(SERVICES, "api", ns)
    await view.until_size(0)
    assert view.messages[-1].WhichOneof("update") == "remove"
    await kube_client.create(SERVICES, service("api", labels), ns)
    await view.until_size(2)
    # A brand-new stream on a missing service is refused with NOT_FOUND (the proxy retries).
    missing = stub.Get(destination_pb2.GetDestination(path=f"nope.{ns}.svc.cluster.local:80"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(missing.read(), WAIT)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    view.call.cancel()


async def test_service_profile_change_reaches_open_get_profile_stream(
    destination: DestinationProcess,
    channel: grpc.aio.Channel,
    kube_client: KubeClient,
    kube_namespace: str,
) -> None:
    ns = kube_namespace
    await kube_client.create(SERVICES, service("books", {"app": "books"}), ns)
    stub = destination_pb2_grpc.DestinationStub(channel)
    call, first = await first_message(
        lambda: stub.GetProfile(
            destination_pb2.GetDestination(
                path=f"books.{ns}.svc.cluster.local:80", context_token=f"ns:{ns}"
            )
        )
    )
    assert first.fully_qualified_name == f"books.{ns}.svc.cluster.local"
    assert not first.routes
    assert first.retry_budget.retry_ratio == pytest.approx(0.2)
    fqn = f"books.{ns}.svc.cluster.local"
    profile = {
        "metadata": {"name": fqn},
        "spec": {
            "routes": [
                {"name": "broken", "condition": {"pathRegex": "/a/(("}},
                {
                    "name": "GET /books",
                    "condition": {"method": "GET", "pathRegex": "/books"},
                    "isRetryable": True,
                    "timeout": "300ms",
                },
            ],
            "retryBudget": {"retryRatio": 0.3, "minRetriesPerSecond": 5, "ttl": "20s"},
            "dstOverrides": [{"authority": f"books-v2.{ns}.svc.cluster.local", "weight": "250m"}],
        },
    }
    await kube_client.create(SERVICEPROFILES, profile, ns)
    second = await asyncio.wait_for(call.read(), WAIT)
    assert [r.metrics_labels["route"] for r in second.routes] == ["GET /books"]
    assert second.routes[0].is_retryable
    assert second.routes[0].timeout.ToMilliseconds() == 300
    assert second.retry_budget.ttl.seconds == 20
    assert second.dst_overrides[0].weight == 2500
    assert second.dst_overrides[0].authority.endswith(":80")
    assert second.profile_ref.resource.name == fqn
    await kube_client.delete(SERVICEPROFILES, fqn, ns)
    third = await asyncio.wait_for(call.read(), WAIT)
    assert not third.routes
    assert not third.profile_ref.resource.name
    assert "gossamer_destination_invalid_resources_total" in destination.metrics()
    call.cancel()


async def test_policy_change_reaches_open_inbound_stream(
    destination: DestinationProcess,
    channel: grpc.aio.Channel,
    kube_client: KubeClient,
    kube_namespace: str,
) -> None:
    ns = kube_namespace
    labels = {"app": "secure"}
    await kube_client.create(DEPLOYMENTS, deployment("secure", 1, labels), ns)
    await until("1 pod", lambda: running_pod_ips(kube_client, ns, "app=secure", 1))
    pods, _ = await kube_client.list(PODS, ns, label_selector="app=secure")
    pod = pods[0]["metadata"]["name"]
    stub = inbound_pb2_grpc.InboundServerPoliciesStub(channel)
    spec = inbound_pb2.PortSpec(workload=f'{{"ns":"{ns}","pod":"{pod}"}}', port=8080)
    call, first = await first_message(lambda: stub.WatchPort(spec))
    assert first.labels["name"] == "all-unauthenticated"

    server = {
        "metadata": {"name": "secure-http"},
        "spec": {"podSelector": {"matchLabels": labels}, "port": "http", "proxyProtocol": "HTTP/1"},
    }
    await kube_client.create(SERVERS, server, ns)
    denied = await asyncio.wait_for(call.read(), WAIT)
    assert denied.labels["name"] == "secure-http"
    assert not denied.authorizations
    assert denied.protocol.HasField("http1")

    # An invalid policy (unknown authentication kind) is skipped without ending the stream.
    bogus = {
        "metadata": {"name": "bogus"},
        "spec": {
            "targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "secure-http"},
            "requiredAuthenticationRefs": [{"kind": "Certificate", "name": "x"}],
        },
    }
    await kube_client.create(AUTHORIZATIONPOLICIES, bogus, ns)
    await kube_client.create(
        MESHTLSAUTHENTICATIONS,
        {
            "metadata": {"name": "clients"},
            "spec": {"identityRefs": [{"kind": "ServiceAccount", "name": "client"}]},
        },
        ns,
    )
    policy = {
        "metadata": {"name": "allow-clients"},
        "spec": {
            "targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "secure-http"},
            "requiredAuthenticationRefs": [
                {"group": "policy.linkerd.io", "kind": "MeshTLSAuthentication", "name": "clients"}
            ],
        },
    }
    await kube_client.create(AUTHORIZATIONPOLICIES, policy, ns)
    allowed = await asyncio.wait_for(call.read(), WAIT)
    (authz,) = allowed.authorizations
    assert authz.labels["name"] == "allow-clients"
    ids = authz.authentication.meshTLS.identities.identities
    assert [i.name for i in ids] == [f"client.{ns}.serviceaccount.identity.gossamer.cluster.local"]
    assert allowed.protocol.http1.routes[0].authorizations[0].labels["name"] == "allow-clients"
    assert 'kind="policy"' in destination.metrics()
    call.cancel()


async def test_server_authorizations_and_rate_limits_reach_open_inbound_stream(
    destination: DestinationProcess,
    channel: grpc.aio.Channel,
    kube_client: KubeClient,
    kube_namespace: str,
) -> None:
    """A Server protected only by legacy ServerAuthorizations (v1beta1) is not deny-all."""
    ns = kube_namespace
    labels = {"app": "legacy"}
    await kube_client.create(DEPLOYMENTS, deployment("legacy", 1, labels), ns)
    await until("1 pod", lambda: running_pod_ips(kube_client, ns, "app=legacy", 1))
    pods, _ = await kube_client.list(PODS, ns, label_selector="app=legacy")
    pod = pods[0]["metadata"]["name"]
    server = {
        "metadata": {"name": "legacy-http", "labels": {"tier": "legacy"}},
        "spec": {"podSelector": {"matchLabels": labels}, "port": 8080},
    }
    await kube_client.create(SERVERS, server, ns)
    stub = inbound_pb2_grpc.InboundServerPoliciesStub(channel)
    spec = inbound_pb2.PortSpec(workload=f'{{"ns":"{ns}","pod":"{pod}"}}', port=8080)

    async def server_seen() -> Any:
        call, first = await first_message(lambda: stub.WatchPort(spec))
        if first.labels["name"] == "legacy-http":
            return call, first
        call.cancel()
        return None

    call, first = await until("the Server", server_seen)
    assert not first.authorizations

    by_selector = {
        "metadata": {"name": "legacy-clients"},
        "spec": {
            "server": {"selector": {"matchLabels": {"tier": "legacy"}}},
            "client": {"meshTLS": {"serviceAccounts": [{"name": "client"}]}},
        },
    }
    await kube_client.create(SERVERAUTHORIZATIONS, by_selector, ns)
    allowed = await asyncio.wait_for(call.read(), WAIT)
    (authz,) = allowed.authorizations
    assert dict(authz.labels) == {
        "group": "policy.linkerd.io",
        "kind": "serverauthorization",
        "name": "legacy-clients",
    }
    ids = authz.authentication.meshTLS.identities.identities
    assert [i.name for i in ids] == [f"client.{ns}.serviceaccount.identity.gossamer.cluster.local"]
    assert authz.networks  # the cluster networks: an Authz without networks is ignored
    route = allowed.protocol.detect.http_routes[0]
    assert [a.labels["name"] for a in route.authorizations] == ["legacy-clients"]

    by_name = {
        "metadata": {"name": "legacy-probes"},
        "spec": {
            "server": {"name": "legacy-http"},
            "client": {"unauthenticated": True, "networks": [{"cidr": "10.0.0.0/8"}]},
        },
    }
    await kube_client.create(SERVERAUTHORIZATIONS, by_name, ns)
    both = await asyncio.wait_for(call.read(), WAIT)
    names = sorted(a.labels["name"] for a in both.authorizations)
    assert names == ["legacy-clients", "legacy-probes"]
    probes = next(a for a in both.authorizations if a.labels["name"] == "legacy-probes")
    assert probes.authentication.HasField("unauthenticated")
    assert [n.net.prefix_len for n in probes.networks] == [8]

    await kube_client.delete(SERVERAUTHORIZATIONS, "legacy-clients", ns)
    after = await asyncio.wait_for(call.read(), WAIT)
    assert [a.labels["name"] for a in after.authorizations] == ["legacy-probes"]

    # An HTTPLocalRateLimitPolicy on the Server reaches the stream as its rate limit.
    rate_limit = {
        "metadata": {"name": "legacy-rl"},
        "spec": {
            "targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "legacy-http"},
            "total": {"requestsPerSecond": 100},
            "identity": {"requestsPerSecond": 10},
            "overrides": [
                {"requestsPerSecond": 50, "clientRefs": [{"kind": "ServiceAccount", "name": "b"}]}
            ],
        },
    }
    await kube_client.create(HTTPLOCALRATELIMITPOLICIES, rate_limit, ns)
    limited = await asyncio.wait_for(call.read(), WAIT)
    limit = limited.protocol.detect.http_local_rate_limit
    assert limit.metadata.resource.name == "legacy-rl"
    assert (limit.total.requestsPerSecond, limit.identity.requestsPerSecond) == (100, 10)
    identities = [i.name for i in limit.overrides[0].clients.identities]
    assert identities == [f"b.{ns}.serviceaccount.identity.gossamer.cluster.local"]
    call.cancel()


async def test_egress_networks_reach_open_outbound_stream(
    destination: DestinationProcess,
    channel: grpc.aio.Channel,
    kube_client: KubeClient,
    kube_namespace: str,
) -> None:
    ns = kube_namespace
    stub = outbound_pb2_grpc.OutboundPoliciesStub(channel)
    spec = outbound_pb2.TrafficSpec(
        source_workload=f'{{"ns":"{ns}","pod":"client"}}',
        addr=net_pb2.TcpAddress(ip=ip_address("203.0.113.7"), port=80),
    )
    call, first = await first_message(lambda: stub.Watch(spec))
    assert first.metadata.default == "egress-fallback"

    egress = {
        "metadata": {"name": "world"},
        "spec": {"trafficPolicy": "Deny", "networks": [{"cidr": "203.0.113.0/24"}]},
    }
    await kube_client.create(EGRESSNETWORKS, egress, ns)
    denied = await asyncio.wait_for(call.read(), WAIT)
    resource = denied.metadata.resource
    assert (resource.kind, resource.name, resource.namespace) == ("EgressNetwork", "world", ns)
    detect = denied.protocol.detect
    assert detect.opaque.routes[0].rules[0].filters[0].HasField("forbidden")
    (deny,) = detect.http1.routes
    assert deny.rules[0].filters[0].failure_injector.status == 403

    route = {
        "metadata": {"name": "allow-get"},
        "spec": {
            "parentRefs": [
                {"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": "world"}
            ],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/get"}}]}],
        },
    }
    await kube_client.create(HTTPROUTES, route, ns)
    routed = await asyncio.wait_for(call.read(), WAIT)
    names = [
        r.metadata.resource.name or r.metadata.default for r in routed.protocol.detect.http1.routes
    ]
    assert names == ["allow-get", "http-egress-deny"]
    allowed_rule = routed.protocol.detect.http1.routes[0].rules[0]
    assert not allowed_rule.filters
    assert allowed_rule.backends.first_available.backends[0].backend.HasField("forward")

    await kube_client.delete(EGRESSNETWORKS, "world", ns)
    after = await asyncio.wait_for(call.read(), WAIT)
    assert after.metadata.default == "egress-fallback"
    call.cancel()
