"""ipaddress <-> io.linkerd.proxy.net conversions, including malformed messages."""

from __future__ import annotations

import ipaddress

import pytest
from gossamer_api.addresses import (
    AddressError,
    ip_from_proto,
    ip_network_from_proto,
    ip_network_to_proto,
    ip_to_proto,
    tcp_address_from_proto,
    tcp_address_to_proto,
)
from gossamer_api.proxy import net_pb2


def test_ipv4_is_big_endian_integer() -> None:
    message = ip_to_proto(ipaddress.IPv4Address("10.1.2.3"))
    assert message.WhichOneof("ip") == "ipv4"
    assert message.ipv4 == 0x0A010203


def test_ipv6_is_two_big_endian_halves() -> None:
    message = ip_to_proto("2001:db8::1:2:3:4")
    assert message.WhichOneof("ip") == "ipv6"
    assert message.ipv6.first == 0x20010DB800000000
    assert message.ipv6.last == 0x0001000200030004


@pytest.mark.parametrize(
    "text",
    [
        "0.0.0.0",
        "255.255.255.255",
        "127.0.0.1",
        "::",
        "::1",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ],
)
def test_ip_round_trip(text: str) -> None:
    address = ipaddress.ip_address(text)
    wire = ip_to_proto(address).SerializeToString()
    assert ip_from_proto(net_pb2.IPAddress.FromString(wire)) == address


def test_ipv4_mapped_ipv6_stays_ipv6() -> None:
    address = ipaddress.ip_address("::ffff:10.0.0.1")
    assert ip_to_proto(address).WhichOneof("ip") == "ipv6"
    assert ip_from_proto(ip_to_proto(address)) == address


def test_bad_text_is_rejected() -> None:
    with pytest.raises(AddressError, match=r"not an IP address: '10\.0\.0\.256'"):
        ip_to_proto("10.0.0.256")


def test_unset_ip_is_rejected() -> None:
    with pytest.raises(AddressError, match="neither ipv4 nor ipv6"):
        ip_from_proto(net_pb2.IPAddress())


def test_tcp_address_round_trip() -> None:
    message = tcp_address_to_proto("10.42.0.7", 8080)
    assert message.port == 8080
    assert message.ip.ipv4 == 0x0A2A0007
    decoded = tcp_address_from_proto(net_pb2.TcpAddress.FromString(message.SerializeToString()))
    assert decoded == (ipaddress.IPv4Address("10.42.0.7"), 8080)
    assert tcp_address_from_proto(tcp_address_to_proto("::1", 0)) == (
        ipaddress.IPv6Address("::1"),
        0,
    )


@pytest.mark.parametrize("port", [-1, 65536, 1 << 32])
def test_tcp_address_rejects_out_of_range_port(port: int) -> None:
    with pytest.raises(AddressError, match=r"port must be an integer in 0\.\.65535"):
        tcp_address_to_proto("10.0.0.1", port)


def test_tcp_address_rejects_bool_port() -> None:
    with pytest.raises(AddressError):
        tcp_address_to_proto("10.0.0.1", True)


def test_tcp_address_from_proto_rejects_missing_ip() -> None:
    with pytest.raises(AddressError, match="TcpAddress has no ip"):
        tcp_address_from_proto(net_pb2.TcpAddress(port=80))


def test_tcp_address_from_proto_rejects_large_port() -> None:
    message = net_pb2.TcpAddress(ip=net_pb2.IPAddress(ipv4=1), port=70000)
    with pytest.raises(AddressError, match="port 70000 is larger than 65535"):
        tcp_address_from_proto(message)


@pytest.mark.parametrize("text", ["0.0.0.0/0", "::/0", "10.0.0.0/8", "192.168.1.7/32", "fd00::/64"])
def test_network_round_trip(text: str) -> None:
    network = ipaddress.ip_network(text)
    message = ip_network_to_proto(text)
    assert message.prefix_len == network.prefixlen
    assert ip_network_from_proto(message) == network


def test_network_text_with_host_bits_is_rejected() -> None:
    with pytest.raises(AddressError, match="not an IP network"):
        ip_network_to_proto("10.1.2.3/8")


def test_network_from_proto_clears_host_bits() -> None:
    message = net_pb2.IPNetwork(ip=ip_to_proto("10.1.2.3"), prefix_len=8)
    assert ip_network_from_proto(message) == ipaddress.ip_network("10.0.0.0/8")


def test_network_from_proto_rejects_long_prefix() -> None:
    message = net_pb2.IPNetwork(ip=ip_to_proto("10.0.0.0"), prefix_len=33)
    with pytest.raises(AddressError, match="prefix_len 33 is larger than 32"):
        ip_network_from_proto(message)


def test_network_from_proto_rejects_missing_ip() -> None:
    with pytest.raises(AddressError, match="IPNetwork has no ip"):
        ip_network_from_proto(net_pb2.IPNetwork(prefix_len=0))
