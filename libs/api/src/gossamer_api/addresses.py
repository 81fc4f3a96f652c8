"""Conversions between :mod:`ipaddress` values and ``io.linkerd.proxy.net`` messages.

Linkerd does not put addresses on the wire as bytes or strings: an IPv4 address is a
``fixed32`` holding the address as a big-endian *integer* (10.1.2.3 is 0x0A010203) and an
IPv6 address is two ``fixed64`` halves, each the big-endian integer of four hextets.
Getting this wrong still serializes fine but sends every proxy to the wrong address, so
every component converts through these functions instead of building the messages by hand.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # protobuf loads with the control-plane client, not with this module
    from gossamer_api.proxy import net_pb2


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_PORT = 65535
_U64_MASK = (1 << 64) - 1


class AddressError(ValueError):
    """An address or ``net`` message cannot be converted (bad text, unset oneof, bad port)."""


def _parse_ip(ip: IPAddress | str) -> IPAddress:
    if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ip
    try:
        return ipaddress.ip_address(ip)
    except ValueError as exc:
        raise AddressError(f"not an IP address: {ip!r}") from exc


def _check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= MAX_PORT:
        raise AddressError(f"port must be an integer in 0..{MAX_PORT}, got {port!r}")
    return port


def ip_to_proto(ip: IPAddress | str) -> net_pb2.IPAddress:
    """Encode an IPv4 or IPv6 address (or its text form) as ``net.IPAddress``."""
    from gossamer_api.proxy import net_pb2

    address = _parse_ip(ip)
    if isinstance(address, ipaddress.IPv4Address):
        return net_pb2.IPAddress(ipv4=int(address))
    value = int(address)
    return net_pb2.IPAddress(ipv6=net_pb2.IPv6(first=value >> 64, last=value & _U64_MASK))


def ip_from_proto(message: net_pb2.IPAddress) -> IPAddress:
    """Decode ``net.IPAddress``; an address with neither family set is an error."""
    family = message.WhichOneof("ip")
    if family == "ipv4":
        return ipaddress.IPv4Address(message.ipv4)
    if family == "ipv6":
        return ipaddress.IPv6Address((message.ipv6.first << 64) | message.ipv6.last)
    raise AddressError("IPAddress has neither ipv4 nor ipv6 set")


def tcp_address_to_proto(ip: IPAddress | str, port: int) -> net_pb2.TcpAddress:
    """Encode ``(ip, port)`` as ``net.TcpAddress``."""
    from gossamer_api.proxy import net_pb2

    return net_pb2.TcpAddress(ip=ip_to_proto(ip), port=_check_port(port))


def tcp_address_from_proto(message: net_pb2.TcpAddress) -> tuple[IPAddress, int]:
    """Decode ``net.TcpAddress`` to ``(ip, port)``, rejecting a missing IP or a port > 65535."""
    if not message.HasField("ip"):
        raise AddressError("TcpAddress has no ip")
    if message.port > MAX_PORT:
        raise AddressError(f"TcpAddress port {message.port} is larger than {MAX_PORT}")
    return ip_from_proto(message.ip), message.port


def ip_network_to_proto(network: IPNetwork | str) -> net_pb2.IPNetwork:
    """Encode a network such as ``10.0.0.0/8`` or ``::/0`` as ``net.IPNetwork``.

    Text with host bits set (``10.1.2.3/8``) is rejected, since it usually means a typo.
    """
    from gossamer_api.proxy import net_pb2

    if isinstance(network, str):
        try:
            network = ipaddress.ip_network(network)
        except ValueError as exc:
            raise AddressError(f"not an IP network: {network!r}") from exc
    return net_pb2.IPNetwork(ip=ip_to_proto(network.network_address), prefix_len=network.prefixlen)


def ip_network_from_proto(message: net_pb2.IPNetwork) -> IPNetwork:
    """Decode ``net.IPNetwork``.

    Host bits below the prefix are cleared, as the proxy ignores them when matching; a
    prefix longer than the address family allows is an error.
    """
    if not message.HasField("ip"):
        raise AddressError("IPNetwork has no ip")
    address = ip_from_proto(message.ip)
    if message.prefix_len > address.max_prefixlen:
        raise AddressError(
            f"IPNetwork prefix_len {message.prefix_len} is larger than "
            f"{address.max_prefixlen} for {address}"
        )
    return ipaddress.ip_network((address, message.prefix_len), strict=False)
