"""Endpoints to the protobuf messages of ``destination.proto``.

Kept apart from :mod:`gossamer_destination.endpoints` so the translation can be tested on
plain dataclasses and so each change is encoded once per topic, not once per stream.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from gossamer_api.proxy import destination_pb2, net_pb2

from gossamer_destination.endpoints import Addr, Endpoint

_MASK64 = (1 << 64) - 1


def ip_address(ip: str) -> net_pb2.IPAddress:
    """IPv4 as a big-endian ``fixed32``; IPv6 as two big-endian ``fixed64`` halves."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv4Address):
        return net_pb2.IPAddress(ipv4=int(addr))
    value = int(addr)
    return net_pb2.IPAddress(ipv6=net_pb2.IPv6(first=value >> 64, last=value & _MASK64))


def ip_from_proto(ip: net_pb2.IPAddress) -> str:
    if ip.WhichOneof("ip") == "ipv4":
        return str(ipaddress.IPv4Address(ip.ipv4))
    return str(ipaddress.IPv6Address((ip.ipv6.first << 64) | ip.ipv6.last))


def tcp_address(addr: Addr) -> net_pb2.TcpAddress:
    return net_pb2.TcpAddress(ip=ip_address(addr[0]), port=addr[1])


def meshed_http2_params() -> destination_pb2.Http2ClientParams:
    """Linkerd's default ``--meshed-http2-client-params``: keepalive 10s/3s while idle."""
    params = destination_pb2.Http2ClientParams()
    params.keep_alive.interval.seconds = 10
    params.keep_alive.timeout.seconds = 3
    params.keep_alive.while_idle = True
    return params


_HTTP2 = meshed_http2_params()


def weighted_addr(
    endpoint: Endpoint, *, caller_zone: str | None = None, extra_labels: Mapping[str, str] = {}
) -> destination_pb2.WeightedAddr:
    wa = destination_pb2.WeightedAddr(addr=tcp_address(endpoint.addr), weight=endpoint.weight)
    labels = dict(endpoint.labels)
    if caller_zone is not None or "zone" in labels:
        labels["zone_locality"] = _locality(endpoint.zone, caller_zone)
    labels.update(extra_labels)
    wa.metric_labels.update(labels)
    if endpoint.identity:
        if endpoint.uri_identity:
            wa.tls_identity.uri_like_identity.uri = endpoint.identity
        else:
            wa.tls_identity.dns_like_identity.name = endpoint.identity
        wa.tls_identity.server_name.name = endpoint.server_name or endpoint.identity
    if endpoint.hint == "h2":
        wa.protocol_hint.h2.SetInParent()
    elif endpoint.hint == "opaque":
        wa.protocol_hint.opaque.SetInParent()
    if endpoint.opaque_transport_port is not None:
        wa.protocol_hint.opaque_transport.inbound_port = endpoint.opaque_transport_port
    if endpoint.authority_override:
        wa.authority_override.authority_override = endpoint.authority_override
    if endpoint.http2:
        wa.http2.CopyFrom(_HTTP2)
    return wa


def _locality(zone: str, caller_zone: str | None) -> str:
    if not zone or not caller_zone:
        return "unknown"
    return "local" if zone == caller_zone else "remote"


def add_update(
    endpoints: Iterable[Endpoint], set_labels: Mapping[str, str], caller_zone: str | None
) -> destination_pb2.Update:
    update = destination_pb2.Update()
    update.add.metric_labels.update(set_labels)
    update.add.addrs.extend(weighted_addr(e, caller_zone=caller_zone) for e in endpoints)
    return update


def remove_update(addrs: Iterable[Addr]) -> destination_pb2.Update:
    update = destination_pb2.Update()
    update.remove.addrs.extend(tcp_address(a) for a in addrs)
    return update


def no_endpoints(exists: bool) -> destination_pb2.Update:
    return destination_pb2.Update(no_endpoints=destination_pb2.NoEndpoints(exists=exists))
