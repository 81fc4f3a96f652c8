"""Where the inbound side may forward (pure decisions of :mod:`gossamer_proxy.inbound_target`)."""

from __future__ import annotations

import pytest
from gossamer_proxy.config import Endpoint
from gossamer_proxy.inbound_target import canonical_host, header_target, refuse_target

OWN = frozenset({4140, 4143, 4191})


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::", "not-an-ip"]
)
def test_a_loopback_original_destination_is_never_honoured(host: str) -> None:
    refusal = refuse_target(Endpoint(host, 8080), redirected=True, own_ports=OWN, pod_ips=())
    assert refusal is not None


def test_a_pod_ip_original_destination_is_served() -> None:
    target = Endpoint("10.1.2.3", 8080)
    assert refuse_target(target, redirected=True, own_ports=OWN, pod_ips={"10.1.2.3"}) is None
    assert refuse_target(target, redirected=True, own_ports=OWN, pod_ips=()) is None


@pytest.mark.parametrize("redirected", [True, False])
@pytest.mark.parametrize("port", sorted(OWN))
def test_the_proxys_own_ports_are_never_a_target(port: int, redirected: bool) -> None:
    target = Endpoint("10.1.2.3", port)
    refusal = refuse_target(target, redirected=redirected, own_ports=OWN, pod_ips={"10.1.2.3"})
    assert refusal is not None
    assert "own listeners" in refusal


def test_with_pod_ips_other_addresses_are_refused() -> None:
    for redirected in (True, False):
        refusal = refuse_target(
            Endpoint("10.9.9.9", 8080), redirected=redirected, own_ports=OWN, pod_ips={"10.1.2.3"}
        )
        assert refusal is not None
    # A client inside the pod reaching the proxy over loopback is not a pod address either.
    refusal = refuse_target(
        Endpoint("127.0.0.1", 8080), redirected=False, own_ports=OWN, pod_ips={"10.1.2.3"}
    )
    assert refusal is not None


def test_header_target_is_the_local_address_the_client_reached() -> None:
    assert header_target(Endpoint("10.1.2.3", 4143), 8080) == Endpoint("10.1.2.3", 8080)
    # A dual-stack listener reports IPv4 clients as IPv4-mapped addresses.
    mapped = header_target(Endpoint("::ffff:10.1.2.3", 4143), 8080)
    assert mapped == Endpoint("10.1.2.3", 8080)
    assert refuse_target(mapped, redirected=False, own_ports=OWN, pod_ips={"10.1.2.3"}) is None


def test_canonical_host() -> None:
    assert canonical_host("::ffff:10.0.0.1") == "10.0.0.1"
    assert canonical_host("fd00:0::1") == "fd00::1"
    assert canonical_host("fe80::1%eth0") == "fe80::1"
    assert canonical_host("name") == "name"
