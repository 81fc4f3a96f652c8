"""Kubernetes objects -> endpoint sets -> WeightedAddr (pure translation)."""

from __future__ import annotations

from typing import Any

import pytest
from gossamer_destination import testing as t
from gossamer_destination import wire
from gossamer_destination.diff import diff_endpoints
from gossamer_destination.endpoints import (
    Endpoint,
    Lookups,
    SliceCache,
    filter_endpoints,
    owner,
    pod_endpoint,
    service_endpoints,
)
from gossamer_destination.settings import DestinationSettings

SETTINGS = DestinationSettings()


def lookups(*pods: dict[str, Any], opaque_server: bool = False) -> Lookups:
    by_name = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
    return Lookups(
        pod=lambda ns, n: by_name.get((ns, n)),
        node_zone=lambda node: "zone-a",
        server_opaque=lambda pod, port: opaque_server,
    )


def test_meshed_pod_gets_identity_h2_hint_transport_and_labels() -> None:
    pod = t.pod("web-5d8f9-x", "10.1.0.5")
    ep = pod_endpoint(pod, "10.1.0.5", 8080, lookups(pod), SETTINGS)
    assert ep.identity == "web.ns.serviceaccount.identity.gossamer.cluster.local"
    assert ep.hint == "h2"
    assert ep.opaque_transport_port == 4143
    assert ep.http2
    assert dict(ep.labels) == {
        "pod": "web-5d8f9-x",
        "deployment": "web",
        "serviceaccount": "web",
        "control_plane_ns": "gossamer",
        "pod_template_hash": "5d8f9",
        "zone": "zone-a",
    }
    wa = wire.weighted_addr(ep, caller_zone="zone-a")
    assert wa.addr.ip.ipv4 == 0x0A010005
    assert wa.addr.port == 8080
    assert wa.weight == 10000
    assert wa.tls_identity.dns_like_identity.name == ep.identity
    assert wa.tls_identity.server_name.name == ep.identity
    assert wa.protocol_hint.WhichOneof("protocol") == "h2"
    assert wa.protocol_hint.opaque_transport.inbound_port == 4143
    assert wa.metric_labels["zone_locality"] == "local"
    assert wa.http2.keep_alive.interval.seconds == 10


def test_unmeshed_pod_has_no_identity_or_hint() -> None:
    pod = t.pod("plain", "10.1.0.6", meshed=None, owner=("StatefulSet", "db"))
    ep = pod_endpoint(pod, "10.1.0.6", 5432, lookups(pod), SETTINGS)
    assert ep.identity is None
    assert ep.hint is None
    assert ep.opaque_transport_port is None
    assert dict(ep.labels)["statefulset"] == "db"
    wa = wire.weighted_addr(ep)
    assert not wa.HasField("tls_identity")
    assert not wa.HasField("protocol_hint")
    assert not wa.HasField("http2")


def test_pod_meshed_by_another_control_plane_has_hint_but_no_identity() -> None:
    pod = t.pod("other", "10.1.0.7", meshed="linkerd")
    ep = pod_endpoint(pod, "10.1.0.7", 8080, lookups(pod), SETTINGS)
    assert ep.identity is None
    assert ep.hint == "h2"


def test_opaque_port_annotation_ranges_and_named_ports() -> None:
    pod = t.pod(
        "db",
        "10.1.0.8",
        annotations={"config.linkerd.io/opaque-ports": "3000-3002,pg"},
        container_ports=[{"name": "pg", "containerPort": 5433}],
    )
    for port in (3001, 5433):
        ep = pod_endpoint(pod, "10.1.0.8", port, lookups(pod), SETTINGS)
        assert ep.hint == "opaque"
        assert ep.opaque_transport_port == 4143
    assert pod_endpoint(pod, "10.1.0.8", 5432, lookups(pod), SETTINGS).hint == "h2"


def test_default_opaque_ports_and_opaque_server() -> None:
    pod = t.pod("db", "10.1.0.8")
    assert pod_endpoint(pod, "10.1.0.8", 3306, lookups(pod), SETTINGS).hint == "opaque"
    ep = pod_endpoint(pod, "10.1.0.8", 8080, lookups(pod, opaque_server=True), SETTINGS)
    assert ep.hint == "opaque"


def test_skip_inbound_ports_and_admin_port() -> None:
    pod = t.pod("web", "10.1.0.9", annotations={"config.linkerd.io/skip-inbound-ports": "9000"})
    skipped = pod_endpoint(pod, "10.1.0.9", 9000, lookups(pod), SETTINGS)
    assert skipped.identity is None
    assert skipped.hint is None
    admin = pod_endpoint(pod, "10.1.0.9", 4191, lookups(pod), SETTINGS)
    assert admin.identity is not None
    assert admin.opaque_transport_port is None


def test_no_transport_header_mode_only_opaque_ports_get_transport() -> None:
    settings = DestinationSettings(transport_header=False)
    pod = t.pod("web", "10.1.0.9")
    assert pod_endpoint(pod, "10.1.0.9", 8080, lookups(pod), settings).opaque_transport_port is None
    assert pod_endpoint(pod, "10.1.0.9", 3306, lookups(pod), settings).opaque_transport_port == 4143


def test_service_endpoints_skip_not_ready_and_use_slice_port() -> None:
    pods = [t.pod(f"p{i}", f"10.1.0.{i}") for i in range(1, 4)]
    es = t.endpoint_slice(
        "web",
        [(f"10.1.0.{i}", f"p{i}") for i in range(1, 4)],
        port=9090,
        not_ready=("10.1.0.3",),
    )
    svc = t.service("web", ports=[{"name": "http", "port": 80, "targetPort": "web"}])
    found = service_endpoints(svc, 80, [es], lookups(*pods), SETTINGS)
    assert sorted(found) == [("10.1.0.1", 9090), ("10.1.0.2", 9090)]
    assert service_endpoints(svc, 81, [es], lookups(*pods), SETTINGS) == {}


def test_multiple_named_ports_pick_the_slice_port_of_the_same_name() -> None:
    svc = t.service(
        "web",
        ports=[
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "admin", "port": 9000, "targetPort": "admin"},
        ],
    )
    es = t.endpoint_slice("web", [("10.1.0.1", None)], port=8080, port_name="http")
    es2 = t.endpoint_slice("web", [("10.1.0.1", None)], name="web-2", port=9990, port_name="admin")
    found = service_endpoints(svc, 9000, [es, es2], lookups(), SETTINGS)
    assert list(found) == [("10.1.0.1", 9990)]


def test_headless_service_port_not_in_spec_matches_by_number() -> None:
    svc = t.service("db", cluster_ip="None", ports=[])
    es = t.endpoint_slice("db", [("10.1.0.1", None)], port=5432, port_name="")
    assert list(service_endpoints(svc, 5432, [es], lookups(), SETTINGS)) == [("10.1.0.1", 5432)]


def test_mirrored_endpoint_gets_authority_override_and_gateway_identity() -> None:
    es = t.endpoint_slice("web-remote", [("172.18.0.5", None)])
    es["metadata"]["annotations"] = {
        "mirror.linkerd.io/remote-svc-fq-name": "web.ns.svc.cluster.local",
        "mirror.linkerd.io/remote-gateway-identity": (
            "gw.linkerd-multicluster.serviceaccount.identity.gossamer.cluster.local"
        ),
    }
    svc = t.service("web-remote")
    ep = service_endpoints(svc, 80, [es], lookups(), SETTINGS)[("172.18.0.5", 8080)]
    assert ep.authority_override == "web.ns.svc.cluster.local:8080"
    wa = wire.weighted_addr(ep)
    assert wa.authority_override.authority_override == "web.ns.svc.cluster.local:8080"
    assert wa.tls_identity.dns_like_identity.name.startswith("gw.")


def test_hostname_filter() -> None:
    es = t.endpoint_slice(
        "db", [("10.1.0.1", None), ("10.1.0.2", None)], hostnames={"10.1.0.2": "db-1"}
    )
    found = service_endpoints(t.service("db"), 80, [es], lookups(), SETTINGS)
    assert list(filter_endpoints(found, hostname="db-1")) == [("10.1.0.2", 8080)]


def test_owner_resolution() -> None:
    job = t.pod("j", "10.0.0.1", owner=("Job", "backup"))
    assert owner(job) == ("k8s_job", "backup")
    rs = t.pod("r", "10.0.0.1", owner=("ReplicaSet", "standalone"))
    assert owner(rs) == ("replicaset", "standalone")
    assert owner(t.pod("n", "10.0.0.1", owner=None)) is None


def test_diff_announces_changed_metadata_and_removes_gone() -> None:
    a = Endpoint("10.0.0.1", 80)
    b = Endpoint("10.0.0.2", 80)
    b2 = Endpoint("10.0.0.2", 80, identity="x")
    c = Endpoint("10.0.0.3", 80)
    change = diff_endpoints({a.addr: a, b.addr: b}, {b2.addr: b2, c.addr: c})
    assert change.added == (b2, c)
    assert change.removed == (a.addr,)
    assert not diff_endpoints({a.addr: a}, {a.addr: a})


@pytest.mark.parametrize(
    ("ip", "expected"),
    [("10.1.2.3", "10.1.2.3"), ("fd00::1:2", "fd00::1:2"), ("::ffff:1.2.3.4", "::ffff:102:304")],
)
def test_ip_encoding_round_trips(ip: str, expected: str) -> None:
    assert wire.ip_from_proto(wire.ip_address(ip)) == expected


def test_ipv6_halves_are_big_endian() -> None:
    addr = wire.ip_address("2001:db8::1")
    assert addr.ipv6.first == 0x20010DB800000000
    assert addr.ipv6.last == 1


def test_slice_cache_reuses_unchanged_slices_and_drops_stale_ones() -> None:
    calls: list[str] = []
    pod = t.pod("p1", "10.1.0.1")

    def pod_lookup(ns: str, name: str) -> dict[str, Any] | None:
        calls.append(name)
        return pod

    lk = Lookups(pod=pod_lookup, node_zone=lambda n: "", server_opaque=lambda p, port: False)
    svc = t.service("web")
    a = t.endpoint_slice("web", [("10.1.0.1", "p1")], name="a")
    a["metadata"]["resourceVersion"] = "1"
    cache = SliceCache()
    first = service_endpoints(svc, 80, [a], lk, SETTINGS, cache=cache, generation=(0, 0))
    again = service_endpoints(svc, 80, [a], lk, SETTINGS, cache=cache, generation=(0, 0))
    assert calls == ["p1"]
    assert first == again
    service_endpoints(svc, 80, [a], lk, SETTINGS, cache=cache, generation=(1, 0))
    assert calls == ["p1", "p1"]
    a["metadata"]["resourceVersion"] = "2"
    service_endpoints(svc, 80, [a], lk, SETTINGS, cache=cache, generation=(1, 0))
    assert calls == ["p1", "p1", "p1"]
    assert service_endpoints(svc, 80, [], lk, SETTINGS, cache=cache, generation=(1, 0)) == {}
    assert cache.lookup(("ns", "a"), ("2", 8080, (1, 0))) is None
