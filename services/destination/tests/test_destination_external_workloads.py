"""ExternalWorkloads as endpoints: validation, selection, URI identities on the wire."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from gossamer_api.proxy import destination_pb2, destination_pb2_grpc
from gossamer_destination import testing as t
from gossamer_destination.app import DestinationApp
from gossamer_destination.endpoints import Lookups, service_endpoints
from gossamer_destination.external_workloads import (
    InvalidExternalWorkloadError,
    check_spiffe_id,
    parse_external_workload,
    workload_endpoints,
)
from gossamer_destination.settings import DestinationSettings
from gossamer_destination.testing import memory_sources
from gossamer_destination.wire import ip_from_proto, weighted_addr

SETTINGS = DestinationSettings()
TIMEOUT = 10.0
IDENTITY = "spiffe://example.org/vm/billing"


def workload(
    name: str = "vm-1",
    ip: str = "192.0.2.10",
    *,
    labels: dict[str, str] | None = None,
    ready: str | None = "True",
    ports: list[dict[str, Any]] | None = None,
    identity: str = IDENTITY,
    server_name: str = "billing.vm.example.org",
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "workload.linkerd.io/v1beta1",
        "kind": "ExternalWorkload",
        "metadata": {"name": name, "namespace": "ns", "labels": labels or {"app": "billing"}},
        "spec": {
            "meshTLS": {"identity": identity, "serverName": server_name},
            "workloadIPs": [{"ip": ip}],
            "ports": ports
            if ports is not None
            else [{"name": "http", "port": 8080}, {"name": "linkerd-proxy", "port": 4143}],
        },
    }
    if ready is not None:
        obj["status"] = {"conditions": [{"type": "Ready", "status": ready}]}
    return obj


def billing_service(**spec: Any) -> dict[str, Any]:
    spec.setdefault("selector", {"app": "billing"})
    return t.service("billing", ports=[{"name": "http", "port": 80, "targetPort": "http"}], **spec)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("identity", "https://example.org/vm", "must start with spiffe://"),
        ("identity", "spiffe://Example.org/vm", "trust domain"),
        ("identity", "spiffe://example.org/vm/../x", "path segment '..'"),
        ("identity", "spiffe://example.org/vm?x=1", "no query"),
        ("identity", "spiffe://user@example.org/vm", "no user info"),
        ("serverName", "Billing_VM", "DNS-1123"),
        ("serverName", "", "1 to 253"),
    ],
)
def test_invalid_mesh_tls_is_refused_naming_the_field(field: str, value: str, message: str) -> None:
    obj = workload()
    obj["spec"]["meshTLS"][field] = value
    with pytest.raises(InvalidExternalWorkloadError) as caught:
        parse_external_workload(obj)
    assert f"ExternalWorkload ns/vm-1: spec.meshTLS.{field}" in str(caught.value)
    assert message in str(caught.value)


def test_invalid_addresses_and_ports_are_refused() -> None:
    bad_ip = workload(ip="192.0.2.300")
    with pytest.raises(InvalidExternalWorkloadError, match=r"workloadIPs\[0\].ip"):
        parse_external_workload(bad_ip)
    two_v4 = workload()
    two_v4["spec"]["workloadIPs"].append({"ip": "192.0.2.11"})
    with pytest.raises(InvalidExternalWorkloadError, match="two IPv4 addresses"):
        parse_external_workload(two_v4)
    dup = workload(ports=[{"name": "http", "port": 1}, {"name": "http", "port": 2}])
    with pytest.raises(InvalidExternalWorkloadError, match="two ports named http"):
        parse_external_workload(dup)
    with pytest.raises(InvalidExternalWorkloadError, match="protocol 'UDP'"):
        parse_external_workload(workload(ports=[{"port": 53, "protocol": "UDP"}]))
    with pytest.raises(InvalidExternalWorkloadError, match="meshTLS is missing"):
        parse_external_workload({"metadata": {"name": "x", "namespace": "ns"}, "spec": {}})
    assert check_spiffe_id("spiffe://example.org") == "spiffe://example.org"


def test_service_selects_ready_workloads_by_label_and_named_port() -> None:
    objects = [
        workload("vm-1", "192.0.2.10"),
        workload("vm-2", "192.0.2.11", ready="False"),
        workload("vm-3", "192.0.2.12", ready=None),
        workload("vm-4", "192.0.2.13", labels={"app": "other"}),
        workload("vm-5", "192.0.2.14", ports=[{"name": "admin", "port": 9000}]),
    ]
    found = workload_endpoints(billing_service(), 80, objects, SETTINGS)
    assert list(found) == [("192.0.2.10", 8080)]
    endpoint = found[("192.0.2.10", 8080)]
    assert endpoint.identity == IDENTITY
    assert endpoint.uri_identity
    assert endpoint.server_name == "billing.vm.example.org"
    assert endpoint.hint == "h2"
    assert endpoint.opaque_transport_port == 4143
    assert dict(endpoint.labels) == {"external_workload": "vm-1", "zone": ""}
    # A Service without a selector, or a port it does not define, selects nothing.
    assert workload_endpoints(t.service("billing"), 80, objects, SETTINGS) == {}
    assert workload_endpoints(billing_service(), 81, objects, SETTINGS) == {}


def test_numeric_target_port_opaque_port_and_custom_proxy_port() -> None:
    service = t.service(
        "billing", ports=[{"port": 5432, "targetPort": 5432}], selector={"app": "billing"}
    )
    obj = workload(ports=[{"name": "linkerd-proxy", "port": 4000}])
    (endpoint,) = workload_endpoints(service, 5432, [obj], SETTINGS).values()
    assert endpoint.port == 5432
    assert endpoint.hint == "opaque"  # 5432 is one of the default opaque ports
    assert endpoint.opaque_transport_port == 4000


def test_invalid_workloads_are_skipped_and_reported() -> None:
    bad = workload("vm-bad", "192.0.2.20", identity="spiffe://example.org/a//b")
    errors: list[Exception] = []
    found = workload_endpoints(
        billing_service(), 80, [bad, workload()], SETTINGS, on_invalid=errors.append
    )
    assert list(found) == [("192.0.2.10", 8080)]
    (error,) = errors
    assert "ExternalWorkload ns/vm-bad: spec.meshTLS.identity" in str(error)


def test_wire_sends_uri_like_identity_and_server_name() -> None:
    (endpoint,) = workload_endpoints(billing_service(), 80, [workload()], SETTINGS).values()
    message = weighted_addr(endpoint)
    assert message.tls_identity.WhichOneof("strategy") == "uri_like_identity"
    assert message.tls_identity.uri_like_identity.uri == IDENTITY
    assert message.tls_identity.server_name.name == "billing.vm.example.org"
    assert message.protocol_hint.opaque_transport.inbound_port == 4143
    assert message.metric_labels["external_workload"] == "vm-1"


def test_endpoint_slices_naming_an_external_workload_resolve_to_its_identity() -> None:
    """Slices written by Linkerd's external-workload controller (targetRef ExternalWorkload)."""
    es = t.endpoint_slice("billing", [("192.0.2.10", None)], port=8080, port_name="http")
    es["endpoints"][0]["targetRef"] = {"kind": "ExternalWorkload", "name": "vm-1"}
    obj = workload()

    def resolve(ns: str, name: str, ip: str, port: int) -> Any:
        found = workload_endpoints(billing_service(), 80, [obj], SETTINGS)
        return found.get((ip, port)) if (ns, name) == ("ns", "vm-1") else None

    lookups = Lookups(
        pod=lambda ns, name: None,
        node_zone=lambda node: "",
        server_opaque=lambda pod, port: False,
        external_workload=resolve,
    )
    found = service_endpoints(billing_service(), 80, [es], lookups, SETTINGS)
    endpoint = found[("192.0.2.10", 8080)]
    assert endpoint.identity == IDENTITY
    assert endpoint.uri_identity


@pytest.fixture
async def served() -> AsyncIterator[tuple[Any, Any]]:
    sources = memory_sources(t.namespace("ns"), billing_service())
    settings = DestinationSettings(
        grpc_addr="127.0.0.1:0", policy_addr="", admin_addr="127.0.0.1:0"
    )
    app = DestinationApp(settings, dict(sources))  # type: ignore[arg-type]
    await asyncio.wait_for(app.start(), TIMEOUT)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    try:
        yield destination_pb2_grpc.DestinationStub(channel), sources
    finally:
        await channel.close()
        await app.stop(grace=0)


async def test_get_follows_external_workloads_as_they_become_ready_and_go(
    served: tuple[Any, Any],
) -> None:
    stub, sources = served
    call = stub.Get(destination_pb2.GetDestination(path="billing.ns.svc.cluster.local:80"))
    not_ready = workload(ready="False")
    sources["externalworkloads"].apply(not_ready)
    ready = copy.deepcopy(not_ready)
    ready["status"]["conditions"][0]["status"] = "True"
    sources["externalworkloads"].apply(ready)
    first = await asyncio.wait_for(call.read(), TIMEOUT)
    while first.WhichOneof("update") != "add":  # an empty service may say no_endpoints first
        first = await asyncio.wait_for(call.read(), TIMEOUT)
    (addr,) = first.add.addrs
    assert (ip_from_proto(addr.addr.ip), addr.addr.port) == ("192.0.2.10", 8080)
    assert addr.tls_identity.uri_like_identity.uri == IDENTITY
    assert addr.tls_identity.server_name.name == "billing.vm.example.org"
    sources["externalworkloads"].remove("ns", "vm-1")
    gone = await asyncio.wait_for(call.read(), TIMEOUT)
    assert gone.WhichOneof("update") == "remove"
    call.cancel()


async def test_get_profile_by_a_workload_ip_names_its_identity(served: tuple[Any, Any]) -> None:
    stub, sources = served
    sources["externalworkloads"].apply(workload(ready="False"))  # Ready or not, as for pods
    call = stub.GetProfile(destination_pb2.GetDestination(path="192.0.2.10:8080"))
    profile = await asyncio.wait_for(call.read(), TIMEOUT)
    while profile.endpoint.tls_identity.WhichOneof("strategy") is None:
        profile = await asyncio.wait_for(call.read(), TIMEOUT)  # before the watch event
    assert profile.endpoint.tls_identity.uri_like_identity.uri == IDENTITY
    assert profile.endpoint.tls_identity.server_name.name == "billing.vm.example.org"
    assert profile.endpoint.metric_labels["namespace"] == "ns"
    assert profile.endpoint.metric_labels["external_workload"] == "vm-1"
    assert not profile.opaque_protocol
    call.cancel()


def test_slice_entries_naming_an_unusable_external_workload_are_left_out() -> None:
    """Missing, not Ready or invalid: never a plain endpoint without the VM's identity."""
    es = t.endpoint_slice(
        "billing", [("192.0.2.10", None), ("192.0.2.11", None)], port=8080, port_name="http"
    )
    es["endpoints"][0]["targetRef"] = {"kind": "ExternalWorkload", "name": "vm-1"}
    es["endpoints"][1]["targetRef"] = {"kind": "ExternalWorkload", "name": "vm-2"}
    lookups = Lookups(
        pod=lambda ns, name: None,
        node_zone=lambda node: "",
        server_opaque=lambda pod, port: False,
        external_workload=lambda ns, name, ip, port: None,
    )
    assert service_endpoints(billing_service(), 80, [es], lookups, SETTINGS) == {}


async def test_get_follows_an_external_workload_named_from_another_namespace(
    served: tuple[Any, Any],
) -> None:
    stub, sources = served
    es = t.endpoint_slice("billing", [("192.0.2.30", None)], port=8080, port_name="http")
    es["endpoints"][0]["targetRef"] = {
        "kind": "ExternalWorkload",
        "name": "vm-far",
        "namespace": "vms",
    }
    far = workload("vm-far", "192.0.2.30", labels={"app": "far"}, ready="False")
    far["metadata"]["namespace"] = "vms"
    sources["externalworkloads"].apply(far)
    sources["endpointslices"].apply(es)
    call = stub.Get(destination_pb2.GetDestination(path="billing.ns.svc.cluster.local:80"))
    first = await asyncio.wait_for(call.read(), TIMEOUT)
    assert first.WhichOneof("update") == "no_endpoints"  # not Ready: not a plaintext endpoint
    ready = copy.deepcopy(far)
    ready["status"]["conditions"][0]["status"] = "True"
    sources["externalworkloads"].apply(ready)  # in another namespace than the service's
    update = await asyncio.wait_for(call.read(), TIMEOUT)
    assert update.WhichOneof("update") == "add"
    (addr,) = update.add.addrs
    assert (ip_from_proto(addr.addr.ip), addr.addr.port) == ("192.0.2.30", 8080)
    assert addr.tls_identity.uri_like_identity.uri == IDENTITY
    call.cancel()


async def test_get_profile_finds_a_workload_whose_ip_is_written_unnormalised(
    served: tuple[Any, Any],
) -> None:
    stub, sources = served
    sources["externalworkloads"].apply(workload(ip="2001:DB8:0:0::10"))
    call = stub.GetProfile(destination_pb2.GetDestination(path="[2001:db8::10]:8080"))
    profile = await asyncio.wait_for(call.read(), TIMEOUT)
    while profile.endpoint.tls_identity.WhichOneof("strategy") is None:
        profile = await asyncio.wait_for(call.read(), TIMEOUT)  # before the watch event
    assert profile.endpoint.tls_identity.uri_like_identity.uri == IDENTITY
    call.cancel()
