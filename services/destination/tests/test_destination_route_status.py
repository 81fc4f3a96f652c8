"""Route status: conditions per parentRef (pure) and the writer that patches only changes."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from gossamer_destination import testing as t
from gossamer_destination.cluster import Cluster
from gossamer_destination.route_status import (
    CONTROLLER_NAME,
    StatusLookups,
    desired_parents,
    status_update,
)
from gossamer_destination.route_status_writer import RouteStatusWriter
from gossamer_destination.settings import DestinationSettings

SETTINGS = DestinationSettings()
GW = "gateway.networking.k8s.io/v1"
SVC_PARENT = {"group": "core", "kind": "Service", "name": "web", "port": 80}


def route(name: str = "r", kind: str = "HTTPRoute", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": GW,
        "kind": kind,
        "metadata": {"name": name, "namespace": "ns", "generation": 3, "resourceVersion": "1"},
        "spec": {"parentRefs": [SVC_PARENT], **spec},
    }


def lookups(*services: str, servers: tuple[str, ...] = ()) -> StatusLookups:
    def service(ns: str, name: str) -> dict[str, Any] | None:
        if name not in services:
            return None
        return {"metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}}

    return StatusLookups(
        service=service,
        server=lambda ns, n: {"metadata": {"name": n}} if n in servers else None,
    )


def conditions(entry: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in entry["conditions"]}


def test_accepted_and_resolved() -> None:
    r = route(rules=[{"backendRefs": [{"name": "web-v2", "port": 80}]}])
    (entry,) = desired_parents(r, lookups("web", "web-v2"), SETTINGS)
    assert entry["controllerName"] == CONTROLLER_NAME == "linkerd.io/policy-controller"
    assert entry["parentRef"] == SVC_PARENT
    assert conditions(entry) == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("True", "ResolvedRefs"),
    }
    assert all(c["observedGeneration"] == 3 for c in entry["conditions"])


def test_missing_backend_and_missing_parent() -> None:
    r = route(rules=[{"backendRefs": [{"name": "gone", "port": 80}]}])
    (entry,) = desired_parents(r, lookups("web"), SETTINGS)
    assert conditions(entry)["ResolvedRefs"] == ("False", "BackendNotFound")
    assert "ns/gone" in entry["conditions"][1]["message"]
    (entry,) = desired_parents(route(), lookups(), SETTINGS)
    assert conditions(entry)["Accepted"] == ("False", "NoMatchingParent")
    assert entry["conditions"][0]["message"] == "Service ns/web not found"


def test_parent_service_without_the_port_is_no_matching_parent() -> None:
    r = route()
    r["spec"]["parentRefs"] = [{**SVC_PARENT, "port": 81}]
    (entry,) = desired_parents(r, lookups("web"), SETTINGS)
    assert conditions(entry)["Accepted"] == ("False", "NoMatchingParent")
    assert entry["conditions"][0]["message"] == "Service ns/web has no port 81"


def test_server_parent_invalid_route_and_foreign_parents() -> None:
    server_parent = {"group": "policy.linkerd.io", "kind": "Server", "name": "web-srv"}
    gateway_parent = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}
    r = route(
        kind="GRPCRoute",
        rules=[{"matches": [{"method": {"type": "RegularExpression", "service": "a.*"}}]}],
    )
    r["spec"]["parentRefs"] = [server_parent, gateway_parent]
    (entry,) = desired_parents(r, lookups(servers=("web-srv",)), SETTINGS)
    assert entry["parentRef"] == server_parent
    assert conditions(entry)["Accepted"] == ("False", "UnsupportedValue")
    assert "RegularExpression" in entry["conditions"][0]["message"]


def test_backend_of_another_kind_is_invalid_kind() -> None:
    r = route(rules=[{"backendRefs": [{"kind": "Pod", "name": "p", "port": 80}]}])
    (entry,) = desired_parents(r, lookups("web"), SETTINGS)
    assert conditions(entry)["ResolvedRefs"] == ("False", "InvalidKind")


def test_status_update_only_when_changed_and_keeps_transition_times() -> None:
    r = route()
    desired = desired_parents(r, lookups("web"), SETTINGS)
    first = status_update(r, desired, "2026-12-07T10:00:00Z")
    assert first is not None
    assert first[0]["conditions"][0]["lastTransitionTime"] == "2026-12-07T10:00:00Z"
    r["status"] = {"parents": copy.deepcopy(first)}
    assert status_update(r, desired, "2026-12-07T11:00:00Z") is None
    # A backend goes missing: only ResolvedRefs gets a new transition time.
    r["spec"]["rules"] = [{"backendRefs": [{"name": "gone", "port": 80}]}]
    second = status_update(r, desired_parents(r, lookups("web"), SETTINGS), "2026-12-07T12:00:00Z")
    assert second is not None
    accepted, resolved = second[0]["conditions"]
    assert accepted["lastTransitionTime"] == "2026-12-07T10:00:00Z"
    assert resolved["lastTransitionTime"] == "2026-12-07T12:00:00Z"


def test_other_controllers_entries_are_kept() -> None:
    r = route()
    theirs = {"controllerName": "example.com/gw", "parentRef": {"name": "gw"}, "conditions": []}
    r["status"] = {"parents": [theirs]}
    parents = status_update(r, desired_parents(r, lookups("web"), SETTINGS), "t")
    assert parents is not None
    assert parents[0] == theirs
    assert parents[1]["controllerName"] == CONTROLLER_NAME


async def test_writer_patches_once_and_again_only_on_change() -> None:
    sources = t.memory_sources(
        t.service("web"), route(), t.service("other", cluster_ip="10.96.0.11")
    )
    cluster = Cluster(sources)
    patches: list[tuple[str, str, str, dict[str, Any]]] = []
    wrote = asyncio.Event()

    async def patch(kind: str, ns: str, name: str, body: dict[str, Any]) -> None:
        patches.append((kind, ns, name, body))
        # What the apiserver does: store the status; the watch reports the update.
        stored = copy.deepcopy(sources[kind].objects[(ns, name)])
        stored["status"] = body["status"]
        sources[kind].apply(stored)
        wrote.set()

    writer = RouteStatusWriter(cluster, SETTINGS, patch, clock=lambda: "2026-12-07T10:00:00Z")
    status_seen = asyncio.Event()

    def seen(events: list[Any]) -> None:
        if any((e.new or {}).get("status") for e in events):
            status_seen.set()

    cluster.informers["gatewayhttproutes"].add_handler(seen)
    cluster.start()
    await cluster.wait_synced()
    writer.start()
    try:
        await asyncio.wait_for(wrote.wait(), 5)
        wrote.clear()
        kind, ns, name, body = patches[0]
        assert (kind, ns, name) == ("gatewayhttproutes", "ns", "r")
        assert body["metadata"]["resourceVersion"]
        (entry,) = body["status"]["parents"]
        assert conditions(entry)["Accepted"] == ("True", "Accepted")
        # Once our own write is back from the watch, a recomputation finds nothing to do.
        await asyncio.wait_for(status_seen.wait(), 5)
        assert await writer.sync_once() is False
        assert len(patches) == 1
        # The parent Service goes away: the status says so.
        sources["services"].remove("ns", "web")
        await asyncio.wait_for(wrote.wait(), 5)
        (entry,) = patches[1][3]["status"]["parents"]
        assert conditions(entry)["Accepted"] == ("False", "NoMatchingParent")
    finally:
        await writer.stop()
        await cluster.stop()


async def test_writer_ignores_conflicts_and_retries_errors() -> None:
    sources = t.memory_sources(t.service("web"), route())
    cluster = Cluster(sources)
    results: list[str] = []
    calls = 0
    done = asyncio.Event()

    class ConflictError(Exception):
        status = 409

    async def patch(kind: str, ns: str, name: str, body: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConflictError("stale")
        if calls == 2:
            raise OSError("apiserver down")
        done.set()

    writer = RouteStatusWriter(cluster, SETTINGS, patch, retry_delay=0.0, on_result=results.append)
    cluster.start()
    await cluster.wait_synced()
    assert await writer.sync_once() is False  # conflict: wait for the watch, no retry
    assert await writer.sync_once() is True  # error: retry later
    writer.start()
    try:
        await asyncio.wait_for(done.wait(), 5)
        assert results[:3] == ["conflict", "error", "written"]
    finally:
        await writer.stop()
        await cluster.stop()


# -- EgressNetwork parents; TLSRoute and TCPRoute --------------------------------------------

EGRESS_PARENT = {"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": "world"}


def egress_lookups(*networks: str, services: tuple[str, ...] = ()) -> StatusLookups:
    base = lookups(*services)
    return StatusLookups(
        service=base.service,
        server=base.server,
        egress_network=lambda ns, n: {"metadata": {"name": n}} if n in networks else None,
    )


def egress_route(kind: str, **spec: Any) -> dict[str, Any]:
    r = route(kind=kind, **spec)
    r["apiVersion"] = "gateway.networking.k8s.io/v1alpha2" if kind != "HTTPRoute" else GW
    r["spec"]["parentRefs"] = [EGRESS_PARENT]
    return r


def test_egress_network_parent_is_accepted_with_refs_to_itself() -> None:
    for kind in ("HTTPRoute", "TLSRoute", "TCPRoute"):
        r = egress_route(kind, rules=[{"backendRefs": [EGRESS_PARENT]}])
        (entry,) = desired_parents(r, egress_lookups("world"), SETTINGS)
        assert entry["parentRef"] == EGRESS_PARENT
        assert conditions(entry) == {
            "Accepted": ("True", "Accepted"),
            "ResolvedRefs": ("True", "ResolvedRefs"),
        }, kind


def test_missing_egress_network_is_no_matching_parent() -> None:
    r = egress_route("TLSRoute", rules=[{"backendRefs": [{"name": "web", "port": 443}]}])
    (entry,) = desired_parents(r, egress_lookups(services=("web",)), SETTINGS)
    accepted = entry["conditions"][0]
    assert (accepted["status"], accepted["reason"]) == ("False", "NoMatchingParent")
    assert accepted["message"] == "EgressNetwork ns/world not found"
    assert conditions(entry)["ResolvedRefs"] == ("True", "ResolvedRefs")


def test_tls_route_problems_are_reported_per_parent() -> None:
    bad = egress_route("TLSRoute", hostnames=["*.*.com"], rules=[{"backendRefs": [EGRESS_PARENT]}])
    (entry,) = desired_parents(bad, egress_lookups("world"), SETTINGS)
    assert conditions(entry)["Accepted"] == ("False", "UnsupportedValue")
    gone = egress_route("TCPRoute", rules=[{"backendRefs": [{"name": "gone", "port": 5432}]}])
    (entry,) = desired_parents(gone, egress_lookups("world"), SETTINGS)
    assert conditions(entry) == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("False", "BackendNotFound"),
    }


def test_tcp_route_on_a_server_is_not_ours() -> None:
    r = route(kind="TCPRoute", rules=[{"backendRefs": [{"name": "web", "port": 80}]}])
    r["spec"]["parentRefs"] = [{"group": "policy.linkerd.io", "kind": "Server", "name": "srv"}]
    assert desired_parents(r, lookups("web", servers=("srv",)), SETTINGS) == []


async def test_writer_patches_tls_routes_of_an_egress_network() -> None:
    tls = egress_route("TLSRoute", hostnames=["api.example.com"])
    tls["spec"]["rules"] = [{"backendRefs": [EGRESS_PARENT]}]
    tls["metadata"]["name"] = "api"
    cluster = Cluster(t.memory_sources(t.egress_network("world", namespace="ns"), tls))
    patches: list[tuple[str, str, str, dict[str, Any]]] = []

    async def patch(kind: str, ns: str, name: str, body: dict[str, Any]) -> None:
        patches.append((kind, ns, name, body))

    writer = RouteStatusWriter(cluster, SETTINGS, patch, clock=lambda: "2026-12-07T10:00:00Z")
    cluster.start()
    await cluster.wait_synced()
    try:
        assert await writer.sync_once() is False
        ((kind, ns, name, body),) = patches
        assert (kind, ns, name) == ("tlsroutes", "ns", "api")
        (entry,) = body["status"]["parents"]
        assert entry["parentRef"] == EGRESS_PARENT
        assert conditions(entry)["Accepted"] == ("True", "Accepted")
    finally:
        await cluster.stop()
