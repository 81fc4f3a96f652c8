"""The real node's cluster DNS: kube-dns records from Services and EndpointSlices (pure)."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import pytest
from gossamer_kube.realnode.clusterdns import (
    RCODE_FORMERR,
    RCODE_NXDOMAIN,
    RCODE_OK,
    RCODE_REFUSED,
    TYPE_AAAA,
    TYPE_SRV,
    DNSFormatError,
    Zone,
    answer,
    build_query,
    parse_question,
)

DOMAIN = "cluster.local"


def service(
    name: str, ns: str, cluster_ip: str, ports: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"clusterIP": cluster_ip, "ports": ports or []},
    }


def endpoint_slice(svc: str, ns: str, endpoints: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{svc}-x",
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": svc},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
    }


@pytest.fixture
def zone() -> Zone:
    return Zone.from_objects(
        DOMAIN,
        [{"metadata": {"name": n}} for n in ("default", "demo")],
        [
            service(
                "web", "demo", "10.239.0.20", [{"name": "http", "port": 8080, "protocol": "TCP"}]
            ),
            service("db", "demo", "None"),
        ],
        [
            endpoint_slice(
                "db",
                "demo",
                [
                    {
                        "addresses": ["10.238.0.7"],
                        "hostname": "db-0",
                        "conditions": {"ready": True},
                    },
                    {"addresses": ["10.238.0.8"], "conditions": {"ready": False}},
                ],
            ),
        ],
    )


def decode(reply: bytes) -> tuple[int, int, list[tuple[int, bytes]]]:
    """(rcode, ancount, [(type, rdata)]) of a reply to a query built by build_query."""
    _id, flags, _qd, ancount = struct.unpack("!HHHH", reply[:8])
    pos = 12
    while reply[pos] != 0:
        pos += reply[pos] + 1
    pos += 5
    records = []
    for _ in range(ancount):
        assert reply[pos : pos + 2] == b"\xc0\x0c"
        rtype, _cls, _ttl, length = struct.unpack("!HHIH", reply[pos + 2 : pos + 12])
        records.append((rtype, reply[pos + 12 : pos + 12 + length]))
        pos += 12 + length
    assert pos == len(reply)
    return flags & 0xF, ancount, records


def a_records(zone: Zone, name: str) -> tuple[int, list[str]]:
    reply = answer(zone, build_query(7, name))
    assert reply is not None
    rcode, _, records = decode(reply)
    return rcode, [str(ipaddress.IPv4Address(data)) for _t, data in records]


def test_cluster_ip_service(zone: Zone) -> None:
    assert a_records(zone, "web.demo.svc.cluster.local") == (RCODE_OK, ["10.239.0.20"])
    assert a_records(zone, "WEB.demo.svc.cluster.local.") == (RCODE_OK, ["10.239.0.20"])


def test_headless_service_answers_ready_endpoints_and_hostnames(zone: Zone) -> None:
    assert a_records(zone, "db.demo.svc.cluster.local") == (RCODE_OK, ["10.238.0.7"])
    assert a_records(zone, "db-0.db.demo.svc.cluster.local") == (RCODE_OK, ["10.238.0.7"])


def test_pod_records_in_known_namespaces_only(zone: Zone) -> None:
    assert a_records(zone, "10-238-0-9.demo.pod.cluster.local") == (RCODE_OK, ["10.238.0.9"])
    assert a_records(zone, "10-238-0-9.nope.pod.cluster.local")[0] == RCODE_NXDOMAIN
    assert a_records(zone, "not-an-ip.demo.pod.cluster.local")[0] == RCODE_NXDOMAIN


def test_missing_names_are_nxdomain_and_outside_names_refused(zone: Zone) -> None:
    assert a_records(zone, "api.demo.svc.cluster.local") == (RCODE_NXDOMAIN, [])
    assert a_records(zone, "example.com")[0] == RCODE_REFUSED


def test_existing_name_of_another_type_is_empty_noerror(zone: Zone) -> None:
    reply = answer(zone, build_query(1, "web.demo.svc.cluster.local", TYPE_AAAA))
    assert reply is not None
    assert decode(reply)[:2] == (RCODE_OK, 0)
    # interior names exist too (search-path probes must not get NXDOMAIN for them)
    assert a_records(zone, "demo.svc.cluster.local") == (RCODE_OK, [])


def test_srv_for_named_ports(zone: Zone) -> None:
    reply = answer(zone, build_query(2, "_http._tcp.web.demo.svc.cluster.local", TYPE_SRV))
    assert reply is not None
    rcode, count, records = decode(reply)
    assert (rcode, count) == (RCODE_OK, 1)
    _prio, _weight, port = struct.unpack("!HHH", records[0][1][:6])
    assert port == 8080


@pytest.mark.parametrize(
    "message",
    [
        b"\x00\x01" + b"\x00" * 10,  # no question
        build_query(3, "web.demo.svc.cluster.local")[:-3],  # truncated
        build_query(3, "a")[:12] + b"\xc0\x0c\x00\x01\x00\x01",  # pointer in a question
    ],
)
def test_malformed_queries_get_formerr(zone: Zone, message: bytes) -> None:
    with pytest.raises(DNSFormatError):
        parse_question(message)
    reply = answer(zone, message)
    assert reply is not None
    assert struct.unpack("!H", reply[2:4])[0] & 0xF == RCODE_FORMERR


def test_runt_messages_get_no_answer(zone: Zone) -> None:
    assert answer(zone, b"\x00\x01") is None


def test_responses_are_not_answered(zone: Zone) -> None:
    reply = answer(zone, build_query(4, "web.demo.svc.cluster.local"))
    assert reply is not None
    with pytest.raises(DNSFormatError):
        parse_question(reply)
