"""Wire-level check of every message against field numbers copied from the contract.

Each message type is filled with every field set, serialized by the generated code and
then parsed by a protobuf reader written here (varints, tags, lengths), *not* by the
generated classes. The expected field numbers, wire types, repetition and nesting below
are transcribed by hand from linkerd-wire.md §1, so a renumbered field, a changed scalar
type (fixed32 vs uint32), a lost ``repeated`` or a field pointing at the wrong message
fails here even though the generated code would happily round-trip its own mistake.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.descriptor_pb2 import DescriptorProto
from google.protobuf.message import Message
from gossamer_api.proxy import (
    destination_pb2,
    grpc_route_pb2,
    http_route_pb2,
    http_types_pb2,
    identity_pb2,
    inbound_pb2,
    meta_pb2,
    net_pb2,
    opaque_route_pb2,
    outbound_pb2,
    tap_pb2,
    tls_route_pb2,
    transport_header_pb2,
)

MODULES: list[ModuleType] = [
    net_pb2,
    meta_pb2,
    http_types_pb2,
    http_route_pb2,
    grpc_route_pb2,
    opaque_route_pb2,
    tls_route_pb2,
    destination_pb2,
    identity_pb2,
    inbound_pb2,
    outbound_pb2,
    tap_pb2,
    transport_header_pb2,
]

# ---------------------------------------------------------------------------------------
# A minimal protobuf wire reader.

VARINT, I64, LEN, I32 = 0, 1, 2, 5


class WireError(Exception):
    pass


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise WireError("varint longer than 10 bytes")


def read_fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """Split a serialized message into (field number, wire type, raw value)."""
    fields: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        tag, pos = read_varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        value: int | bytes
        if wire_type == VARINT:
            value, pos = read_varint(data, pos)
        elif wire_type == I64:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire_type == I32:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        elif wire_type == LEN:
            length, pos = read_varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        else:
            raise WireError(f"unexpected wire type {wire_type}")
        if pos > len(data):
            raise WireError("truncated field")
        fields.append((number, wire_type, value))
    return fields


def test_reader_decodes_known_bytes() -> None:
    # TcpAddress{ip: {ipv4: 10.1.2.3}, port: 8080} written out by hand.
    raw = bytes([0x0A, 0x05, 0x0D, 0x03, 0x02, 0x01, 0x0A, 0x10, 0x90, 0x3F])
    assert read_fields(raw) == [(1, LEN, bytes([0x0D, 0x03, 0x02, 0x01, 0x0A])), (2, VARINT, 8080)]
    assert read_fields(bytes([0x0D, 0x03, 0x02, 0x01, 0x0A])) == [(1, I32, 0x0A010203)]
    with pytest.raises(WireError):
        read_fields(bytes([0x08, 0x80]))


# ---------------------------------------------------------------------------------------
# Hand-written expectations (linkerd-wire.md §1).


@dataclass(frozen=True)
class Field:
    wire: int
    message: str | None = None
    repeated: bool = False
    is_map: bool = False


def varint() -> Field:
    return Field(VARINT)


def fixed32() -> Field:
    return Field(I32)


def fixed64() -> Field:
    return Field(I64)


def text() -> Field:
    """string or bytes."""
    return Field(LEN)


def msg(name: str) -> Field:
    return Field(LEN, message=name)


def rep(field: Field) -> Field:
    return Field(field.wire, field.message, repeated=True)


def string_map() -> Field:
    return Field(LEN, repeated=True, is_map=True)


NET = "io.linkerd.proxy.net."
META = "io.linkerd.proxy.meta."
HT = "io.linkerd.proxy.http_types."
HR = "io.linkerd.proxy.http_route."
GR = "io.linkerd.proxy.grpc_route."
OR = "io.linkerd.proxy.opaque_route."
TR = "io.linkerd.proxy.tls_route."
DST = "io.linkerd.proxy.destination."
ID = "io.linkerd.proxy.identity."
IN = "io.linkerd.proxy.inbound."
OUT = "io.linkerd.proxy.outbound."
TAP = "io.linkerd.proxy.tap."
TH = "transport.l5d.io."
DURATION = "google.protobuf.Duration"
TIMESTAMP = "google.protobuf.Timestamp"
EMPTY: dict[int, Field] = {}


def _route_family(prefix: str, *, filter_kinds: dict[int, Field], opaque: bool) -> dict[str, Any]:
    """Distribution/RouteBackend/WeightedRouteBackend repeat inside every outbound route."""
    route_backend: dict[int, Field] = {
        1: msg(OUT + "Backend"),
        3: rep(msg(prefix + "Filter")),
    }
    if not opaque:
        route_backend[4] = msg(DURATION)
    return {
        prefix + "Filter": filter_kinds,
        prefix + "Distribution": {
            1: msg(prefix + "Distribution.Empty"),
            2: msg(prefix + "Distribution.FirstAvailable"),
            3: msg(prefix + "Distribution.RandomAvailable"),
        },
        prefix + "Distribution.Empty": EMPTY,
        prefix + "Distribution.FirstAvailable": {1: rep(msg(prefix + "RouteBackend"))},
        prefix + "Distribution.RandomAvailable": {1: rep(msg(prefix + "WeightedRouteBackend"))},
        prefix + "RouteBackend": route_backend,
        prefix + "WeightedRouteBackend": {1: msg(prefix + "RouteBackend"), 2: varint()},
    }


SCHEMA: dict[str, dict[int, Field]] = {
    DURATION: {1: varint(), 2: varint()},
    TIMESTAMP: {1: varint(), 2: varint()},
    # net.proto
    NET + "IPAddress": {1: fixed32(), 2: msg(NET + "IPv6")},
    NET + "IPv6": {1: fixed64(), 2: fixed64()},
    NET + "IPNetwork": {1: msg(NET + "IPAddress"), 2: varint()},
    NET + "TcpAddress": {1: msg(NET + "IPAddress"), 2: varint()},
    # meta.proto
    META + "Metadata": {1: text(), 2: msg(META + "Resource")},
    META + "Resource": {1: text(), 2: text(), 3: text(), 4: text(), 5: text(), 6: varint()},
    # http_types.proto
    HT + "HttpMethod": {1: varint(), 2: text()},
    HT + "Scheme": {1: varint(), 2: text()},
    HT + "Headers": {1: rep(msg(HT + "Headers.Header"))},
    HT + "Headers.Header": {1: text(), 2: text()},
    # http_route.proto
    HR + "HostMatch": {1: text(), 2: msg(HR + "HostMatch.Suffix")},
    HR + "HostMatch.Suffix": {1: rep(text())},
    HR + "HttpRouteMatch": {
        1: msg(HR + "PathMatch"),
        2: rep(msg(HR + "HeaderMatch")),
        3: rep(msg(HR + "QueryParamMatch")),
        4: msg(HT + "HttpMethod"),
    },
    HR + "PathMatch": {1: text(), 2: text(), 3: text()},
    HR + "HeaderMatch": {1: text(), 2: text(), 3: text()},
    HR + "QueryParamMatch": {1: text(), 2: text(), 3: text()},
    HR + "RequestHeaderModifier": {
        1: msg(HT + "Headers"),
        2: msg(HT + "Headers"),
        3: rep(text()),
    },
    HR + "ResponseHeaderModifier": {
        1: msg(HT + "Headers"),
        2: msg(HT + "Headers"),
        3: rep(text()),
    },
    HR + "RequestRedirect": {
        1: msg(HT + "Scheme"),
        2: text(),
        3: msg(HR + "PathModifier"),
        4: varint(),
        5: varint(),
    },
    HR + "PathModifier": {1: text(), 2: text()},
    HR + "HttpFailureInjector": {1: varint(), 2: text(), 3: msg(HR + "Ratio")},
    HR + "Ratio": {1: varint(), 2: varint()},
    HR + "Timeouts": {1: msg(DURATION), 2: msg(DURATION), 3: msg(DURATION)},
    # grpc_route.proto
    GR + "GrpcRouteMatch": {1: msg(GR + "GrpcRpcMatch"), 2: rep(msg(HR + "HeaderMatch"))},
    GR + "GrpcRpcMatch": {1: text(), 2: text()},
    GR + "GrpcFailureInjector": {1: varint(), 2: text(), 3: msg(HR + "Ratio")},
    # opaque_route.proto, tls_route.proto
    OR + "Invalid": {1: text()},
    OR + "Forbidden": EMPTY,
    TR + "SniMatch": {1: text(), 2: msg(TR + "SniMatch.Suffix")},
    TR + "SniMatch.Suffix": {1: rep(text())},
    # destination.proto
    DST + "GetDestination": {1: text(), 2: text(), 3: text()},
    DST + "Update": {
        1: msg(DST + "WeightedAddrSet"),
        2: msg(DST + "AddrSet"),
        3: msg(DST + "NoEndpoints"),
    },
    DST + "AddrSet": {1: rep(msg(NET + "TcpAddress"))},
    DST + "WeightedAddrSet": {1: rep(msg(DST + "WeightedAddr")), 2: string_map()},
    DST + "WeightedAddr": {
        1: msg(NET + "TcpAddress"),
        3: varint(),
        4: string_map(),
        5: msg(DST + "TlsIdentity"),
        6: msg(DST + "ProtocolHint"),
        7: msg(DST + "AuthorityOverride"),
        8: msg(DST + "Http2ClientParams"),
        9: msg(META + "Metadata"),
    },
    DST + "TlsIdentity": {
        1: msg(DST + "TlsIdentity.DnsLikeIdentity"),
        3: msg(DST + "TlsIdentity.UriLikeIdentity"),
        4: msg(DST + "TlsIdentity.DnsLikeIdentity"),
    },
    DST + "TlsIdentity.DnsLikeIdentity": {1: text()},
    DST + "TlsIdentity.UriLikeIdentity": {1: text()},
    DST + "AuthorityOverride": {1: text()},
    DST + "NoEndpoints": {1: varint()},
    DST + "ProtocolHint": {
        1: msg(DST + "ProtocolHint.H2"),
        2: msg(DST + "ProtocolHint.OpaqueTransport"),
        3: msg(DST + "ProtocolHint.Opaque"),
    },
    DST + "ProtocolHint.H2": EMPTY,
    DST + "ProtocolHint.Opaque": EMPTY,
    DST + "ProtocolHint.OpaqueTransport": {1: varint()},
    DST + "Http2ClientParams": {
        1: msg(DST + "Http2ClientParams.FlowControl"),
        2: msg(DST + "Http2ClientParams.KeepAlive"),
        3: msg(DST + "Http2ClientParams.Internals"),
    },
    DST + "Http2ClientParams.FlowControl": {1: varint(), 2: varint(), 3: varint()},
    DST + "Http2ClientParams.KeepAlive": {1: msg(DURATION), 2: msg(DURATION), 3: varint()},
    DST + "Http2ClientParams.Internals": {1: varint(), 2: varint(), 3: varint()},
    DST + "DestinationProfile": {
        1: rep(msg(DST + "Route")),
        2: msg(DST + "RetryBudget"),
        3: rep(msg(DST + "WeightedDst")),
        4: varint(),
        5: text(),
        6: msg(DST + "WeightedAddr"),
        7: msg(META + "Metadata"),
        8: msg(META + "Metadata"),
    },
    DST + "Route": {
        1: msg(DST + "RequestMatch"),
        2: rep(msg(DST + "ResponseClass")),
        3: string_map(),
        4: varint(),
        5: msg(DURATION),
    },
    DST + "RetryBudget": {1: fixed32(), 2: varint(), 3: msg(DURATION)},
    DST + "ResponseClass": {1: msg(DST + "ResponseMatch"), 2: varint()},
    DST + "RequestMatch": {
        1: msg(DST + "RequestMatch.Seq"),
        2: msg(DST + "RequestMatch.Seq"),
        3: msg(DST + "RequestMatch"),
        4: msg(DST + "PathMatch"),
        5: msg(HT + "HttpMethod"),
    },
    DST + "RequestMatch.Seq": {1: rep(msg(DST + "RequestMatch"))},
    DST + "PathMatch": {1: text()},
    DST + "ResponseMatch": {
        1: msg(DST + "ResponseMatch.Seq"),
        2: msg(DST + "ResponseMatch.Seq"),
        3: msg(DST + "ResponseMatch"),
        4: msg(DST + "HttpStatusRange"),
    },
    DST + "ResponseMatch.Seq": {1: rep(msg(DST + "ResponseMatch"))},
    DST + "HttpStatusRange": {1: varint(), 2: varint()},
    DST + "WeightedDst": {1: text(), 2: varint(), 3: msg(META + "Metadata")},
    # identity.proto
    ID + "CertifyRequest": {1: text(), 2: text(), 3: text()},
    ID + "CertifyResponse": {1: text(), 2: rep(text()), 3: msg(TIMESTAMP)},
    # inbound.proto
    IN + "PortSpec": {1: text(), 2: varint()},
    IN + "Server": {
        1: msg(IN + "ProxyProtocol"),
        2: rep(msg(NET + "IPAddress")),
        3: rep(msg(IN + "Authz")),
        4: string_map(),
    },
    IN + "ProxyProtocol": {
        1: msg(IN + "ProxyProtocol.Detect"),
        2: msg(IN + "ProxyProtocol.Opaque"),
        3: msg(IN + "ProxyProtocol.Tls"),
        4: msg(IN + "ProxyProtocol.Http1"),
        5: msg(IN + "ProxyProtocol.Http2"),
        6: msg(IN + "ProxyProtocol.Grpc"),
    },
    IN + "ProxyProtocol.Detect": {
        1: msg(DURATION),
        3: rep(msg(IN + "HttpRoute")),
        4: msg(IN + "HttpLocalRateLimit"),
    },
    IN + "ProxyProtocol.Http1": {
        2: rep(msg(IN + "HttpRoute")),
        3: msg(IN + "HttpLocalRateLimit"),
    },
    IN + "ProxyProtocol.Http2": {
        2: rep(msg(IN + "HttpRoute")),
        3: msg(IN + "HttpLocalRateLimit"),
    },
    IN + "ProxyProtocol.Grpc": {2: rep(msg(IN + "GrpcRoute"))},
    IN + "ProxyProtocol.Opaque": EMPTY,
    IN + "ProxyProtocol.Tls": EMPTY,
    IN + "Authz": {
        1: rep(msg(IN + "Network")),
        2: msg(IN + "Authn"),
        3: string_map(),
        4: msg(META + "Metadata"),
    },
    IN + "Network": {1: msg(NET + "IPNetwork"), 2: rep(msg(NET + "IPNetwork"))},
    IN + "Authn": {
        1: msg(IN + "Authn.PermitUnauthenticated"),
        2: msg(IN + "Authn.PermitMeshTLS"),
    },
    IN + "Authn.PermitUnauthenticated": EMPTY,
    IN + "Authn.PermitMeshTLS": {
        1: msg(IN + "Authn.PermitUnauthenticated"),
        2: msg(IN + "Authn.PermitMeshTLS.PermitClientIdentities"),
    },
    IN + "Authn.PermitMeshTLS.PermitClientIdentities": {
        1: rep(msg(IN + "Identity")),
        2: rep(msg(IN + "IdentitySuffix")),
    },
    IN + "Identity": {1: text()},
    IN + "IdentitySuffix": {1: rep(text())},
    IN + "HttpRoute": {
        1: msg(META + "Metadata"),
        2: rep(msg(HR + "HostMatch")),
        3: rep(msg(IN + "Authz")),
        4: rep(msg(IN + "HttpRoute.Rule")),
    },
    IN + "HttpRoute.Rule": {
        1: rep(msg(HR + "HttpRouteMatch")),
        2: rep(msg(IN + "HttpRoute.Filter")),
    },
    IN + "HttpRoute.Filter": {
        1: msg(HR + "HttpFailureInjector"),
        2: msg(HR + "RequestHeaderModifier"),
        3: msg(HR + "RequestRedirect"),
    },
    IN + "GrpcRoute": {
        1: msg(META + "Metadata"),
        2: rep(msg(HR + "HostMatch")),
        3: rep(msg(IN + "Authz")),
        4: rep(msg(IN + "GrpcRoute.Rule")),
    },
    IN + "GrpcRoute.Rule": {
        1: rep(msg(GR + "GrpcRouteMatch")),
        2: rep(msg(IN + "GrpcRoute.Filter")),
    },
    IN + "GrpcRoute.Filter": {
        1: msg(GR + "GrpcFailureInjector"),
        2: msg(HR + "RequestHeaderModifier"),
    },
    IN + "HttpLocalRateLimit": {
        1: msg(META + "Metadata"),
        2: msg(IN + "HttpLocalRateLimit.Limit"),
        3: msg(IN + "HttpLocalRateLimit.Limit"),
        4: rep(msg(IN + "HttpLocalRateLimit.Override")),
    },
    IN + "HttpLocalRateLimit.Limit": {1: varint()},
    IN + "HttpLocalRateLimit.Override": {
        1: msg(IN + "HttpLocalRateLimit.Limit"),
        2: msg(IN + "HttpLocalRateLimit.Override.ClientIdentities"),
    },
    IN + "HttpLocalRateLimit.Override.ClientIdentities": {1: rep(msg(IN + "Identity"))},
    # outbound.proto
    OUT + "TrafficSpec": {1: text(), 2: msg(NET + "TcpAddress"), 3: text()},
    OUT + "OutboundPolicy": {1: msg(OUT + "ProxyProtocol"), 2: msg(META + "Metadata")},
    OUT + "ProxyProtocol": {
        1: msg(OUT + "ProxyProtocol.Detect"),
        2: msg(OUT + "ProxyProtocol.Opaque"),
        3: msg(OUT + "ProxyProtocol.Http1"),
        4: msg(OUT + "ProxyProtocol.Http2"),
        5: msg(OUT + "ProxyProtocol.Grpc"),
        6: msg(OUT + "ProxyProtocol.Tls"),
    },
    OUT + "ProxyProtocol.Detect": {
        1: msg(DURATION),
        2: msg(OUT + "ProxyProtocol.Opaque"),
        3: msg(OUT + "ProxyProtocol.Http1"),
        4: msg(OUT + "ProxyProtocol.Http2"),
    },
    OUT + "ProxyProtocol.Opaque": {1: rep(msg(OUT + "OpaqueRoute"))},
    OUT + "ProxyProtocol.Tls": {1: rep(msg(OUT + "TlsRoute"))},
    OUT + "ProxyProtocol.Http1": {
        1: rep(msg(OUT + "HttpRoute")),
        2: msg(OUT + "FailureAccrual"),
    },
    OUT + "ProxyProtocol.Http2": {
        1: rep(msg(OUT + "HttpRoute")),
        2: msg(OUT + "FailureAccrual"),
    },
    OUT + "ProxyProtocol.Grpc": {
        1: rep(msg(OUT + "GrpcRoute")),
        2: msg(OUT + "FailureAccrual"),
    },
    OUT + "HttpRoute": {
        1: msg(META + "Metadata"),
        2: rep(msg(HR + "HostMatch")),
        3: rep(msg(OUT + "HttpRoute.Rule")),
    },
    OUT + "HttpRoute.Rule": {
        1: rep(msg(HR + "HttpRouteMatch")),
        2: rep(msg(OUT + "HttpRoute.Filter")),
        3: msg(OUT + "HttpRoute.Distribution"),
        4: msg(DURATION),
        5: msg(HR + "Timeouts"),
        6: msg(OUT + "HttpRoute.Retry"),
        7: varint(),
    },
    OUT + "HttpRoute.Retry": {
        1: varint(),
        2: varint(),
        3: msg(OUT + "HttpRoute.Retry.Conditions"),
        4: msg(DURATION),
        5: msg(OUT + "ExponentialBackoff"),
    },
    OUT + "HttpRoute.Retry.Conditions": {
        1: rep(msg(OUT + "HttpRoute.Retry.Conditions.StatusRange")),
    },
    OUT + "HttpRoute.Retry.Conditions.StatusRange": {1: varint(), 2: varint()},
    **_route_family(
        OUT + "HttpRoute.",
        filter_kinds={
            1: msg(HR + "HttpFailureInjector"),
            2: msg(HR + "RequestHeaderModifier"),
            3: msg(HR + "RequestRedirect"),
            4: msg(HR + "ResponseHeaderModifier"),
        },
        opaque=False,
    ),
    OUT + "GrpcRoute": {
        1: msg(META + "Metadata"),
        2: rep(msg(HR + "HostMatch")),
        3: rep(msg(OUT + "GrpcRoute.Rule")),
    },
    OUT + "GrpcRoute.Rule": {
        1: rep(msg(GR + "GrpcRouteMatch")),
        2: rep(msg(OUT + "GrpcRoute.Filter")),
        3: msg(OUT + "GrpcRoute.Distribution"),
        4: msg(DURATION),
        5: msg(HR + "Timeouts"),
        6: msg(OUT + "GrpcRoute.Retry"),
        7: varint(),
    },
    OUT + "GrpcRoute.Retry": {
        1: varint(),
        2: varint(),
        3: msg(OUT + "GrpcRoute.Retry.Conditions"),
        4: msg(DURATION),
        5: msg(OUT + "ExponentialBackoff"),
    },
    # Field numbers are gRPC status codes: CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
    # INTERNAL, UNAVAILABLE.
    OUT + "GrpcRoute.Retry.Conditions": {
        1: varint(),
        4: varint(),
        8: varint(),
        13: varint(),
        14: varint(),
    },
    **_route_family(
        OUT + "GrpcRoute.",
        filter_kinds={1: msg(GR + "GrpcFailureInjector"), 2: msg(HR + "RequestHeaderModifier")},
        opaque=False,
    ),
    OUT + "OpaqueRoute": {1: msg(META + "Metadata"), 3: rep(msg(OUT + "OpaqueRoute.Rule"))},
    OUT + "OpaqueRoute.Rule": {
        1: msg(OUT + "OpaqueRoute.Distribution"),
        2: rep(msg(OUT + "OpaqueRoute.Filter")),
    },
    **_route_family(
        OUT + "OpaqueRoute.",
        filter_kinds={1: msg(OR + "Invalid"), 2: msg(OR + "Forbidden")},
        opaque=True,
    ),
    OUT + "TlsRoute": {
        1: msg(META + "Metadata"),
        2: rep(msg(TR + "SniMatch")),
        3: rep(msg(OUT + "TlsRoute.Rule")),
    },
    OUT + "TlsRoute.Rule": {
        1: msg(OUT + "TlsRoute.Distribution"),
        2: rep(msg(OUT + "TlsRoute.Filter")),
    },
    **_route_family(
        OUT + "TlsRoute.",
        filter_kinds={1: msg(OR + "Invalid"), 2: msg(OR + "Forbidden")},
        opaque=True,
    ),
    OUT + "Backend": {
        1: msg(META + "Metadata"),
        2: msg(DST + "WeightedAddr"),
        3: msg(OUT + "Backend.BalanceP2c"),
        4: msg(OUT + "Queue"),
    },
    OUT + "Backend.EndpointDiscovery": {
        1: msg(OUT + "Backend.EndpointDiscovery.DestinationGet"),
    },
    OUT + "Backend.EndpointDiscovery.DestinationGet": {1: text()},
    OUT + "Backend.BalanceP2c": {
        1: msg(OUT + "Backend.EndpointDiscovery"),
        2: msg(OUT + "Backend.BalanceP2c.PeakEwma"),
        3: msg(OUT + "Backend.BalanceP2c.PenaltyPeakEwma"),
    },
    OUT + "Backend.BalanceP2c.PeakEwma": {1: msg(DURATION), 2: msg(DURATION)},
    OUT + "Backend.BalanceP2c.PenaltyPeakEwma": {
        1: msg(DURATION),
        2: msg(DURATION),
        3: msg(DURATION),
        4: msg(DURATION),
        5: msg(DURATION),
    },
    OUT + "Queue": {1: varint(), 2: msg(DURATION)},
    OUT + "FailureAccrual": {
        1: msg(OUT + "FailureAccrual.ConsecutiveFailures"),
        2: msg(OUT + "FailureAccrual.Unified"),
        3: msg(OUT + "EjectionConfig"),
    },
    OUT + "FailureAccrual.ConsecutiveFailures": {1: varint(), 2: msg(OUT + "ExponentialBackoff")},
    OUT + "FailureAccrual.Unified": {
        1: fixed64(),
        2: msg(DURATION),
        3: varint(),
        4: varint(),
        5: msg(OUT + "ExponentialBackoff"),
    },
    OUT + "EjectionConfig": {1: varint()},
    OUT + "ExponentialBackoff": {
        1: msg(DURATION),
        2: msg(DURATION),
        3: fixed32(),
        4: varint(),
    },
    # tap.proto
    TAP + "ObserveRequest": {
        1: varint(),
        2: msg(TAP + "ObserveRequest.Match"),
        3: msg(TAP + "ObserveRequest.Extract"),
    },
    TAP + "ObserveRequest.Match": {
        1: msg(TAP + "ObserveRequest.Match.Seq"),
        2: msg(TAP + "ObserveRequest.Match.Seq"),
        3: msg(TAP + "ObserveRequest.Match"),
        4: msg(TAP + "ObserveRequest.Match.Tcp"),
        5: msg(TAP + "ObserveRequest.Match.Tcp"),
        6: msg(TAP + "ObserveRequest.Match.Http"),
        7: msg(TAP + "ObserveRequest.Match.Label"),
        8: msg(TAP + "ObserveRequest.Match.Label"),
    },
    TAP + "ObserveRequest.Match.Seq": {1: rep(msg(TAP + "ObserveRequest.Match"))},
    TAP + "ObserveRequest.Match.Label": {1: text(), 2: text()},
    TAP + "ObserveRequest.Match.Tcp": {
        1: msg(TAP + "ObserveRequest.Match.Tcp.Netmask"),
        3: msg(TAP + "ObserveRequest.Match.Tcp.PortRange"),
    },
    TAP + "ObserveRequest.Match.Tcp.Netmask": {1: msg(NET + "IPAddress"), 2: varint()},
    TAP + "ObserveRequest.Match.Tcp.PortRange": {1: varint(), 2: varint()},
    TAP + "ObserveRequest.Match.Http": {
        1: msg(HT + "Scheme"),
        2: msg(TAP + "ObserveRequest.Match.Http.StringMatch"),
        3: msg(HT + "HttpMethod"),
        4: msg(TAP + "ObserveRequest.Match.Http.StringMatch"),
    },
    TAP + "ObserveRequest.Match.Http.StringMatch": {1: text(), 2: text()},
    TAP + "ObserveRequest.Extract": {1: msg(TAP + "ObserveRequest.Extract.Http")},
    TAP + "ObserveRequest.Extract.Http": {
        1: msg(TAP + "ObserveRequest.Extract.Http.Headers"),
    },
    TAP + "ObserveRequest.Extract.Http.Headers": EMPTY,
    TAP + "Eos": {1: varint(), 2: varint()},
    TAP + "TapEvent": {
        1: msg(NET + "TcpAddress"),
        2: msg(NET + "TcpAddress"),
        3: msg(TAP + "TapEvent.Http"),
        4: msg(TAP + "TapEvent.EndpointMeta"),
        5: msg(TAP + "TapEvent.EndpointMeta"),
        6: varint(),
        7: msg(TAP + "TapEvent.RouteMeta"),
    },
    TAP + "TapEvent.EndpointMeta": {1: string_map()},
    TAP + "TapEvent.RouteMeta": {1: string_map()},
    TAP + "TapEvent.Http": {
        1: msg(TAP + "TapEvent.Http.RequestInit"),
        2: msg(TAP + "TapEvent.Http.ResponseInit"),
        3: msg(TAP + "TapEvent.Http.ResponseEnd"),
    },
    TAP + "TapEvent.Http.StreamId": {1: varint(), 2: varint()},
    TAP + "TapEvent.Http.RequestInit": {
        1: msg(TAP + "TapEvent.Http.StreamId"),
        2: msg(HT + "HttpMethod"),
        3: msg(HT + "Scheme"),
        4: text(),
        5: text(),
        6: msg(HT + "Headers"),
    },
    TAP + "TapEvent.Http.ResponseInit": {
        1: msg(TAP + "TapEvent.Http.StreamId"),
        2: msg(DURATION),
        3: varint(),
        4: msg(HT + "Headers"),
    },
    TAP + "TapEvent.Http.ResponseEnd": {
        1: msg(TAP + "TapEvent.Http.StreamId"),
        2: msg(DURATION),
        3: msg(DURATION),
        4: varint(),
        5: msg(TAP + "Eos"),
        6: msg(HT + "Headers"),
    },
    # transport header (linkerd2-proxy linkerd/transport-header/proto/header.proto)
    TH + "Header": {1: varint(), 2: text(), 3: msg(TH + "SessionProtocol")},
    TH + "SessionProtocol": {
        1: msg(TH + "SessionProtocol.Http1"),
        2: msg(TH + "SessionProtocol.Http2"),
    },
    TH + "SessionProtocol.Http1": EMPTY,
    TH + "SessionProtocol.Http2": EMPTY,
}

# Every oneof, by the field numbers it groups (linkerd-wire.md §1).
ONEOFS: dict[str, list[tuple[int, ...]]] = {
    NET + "IPAddress": [(1, 2)],
    META + "Metadata": [(1, 2)],
    HT + "HttpMethod": [(1, 2)],
    HT + "Scheme": [(1, 2)],
    HR + "HostMatch": [(1, 2)],
    HR + "PathMatch": [(1, 2, 3)],
    HR + "HeaderMatch": [(2, 3)],
    HR + "QueryParamMatch": [(2, 3)],
    HR + "PathModifier": [(1, 2)],
    TR + "SniMatch": [(1, 2)],
    DST + "Update": [(1, 2, 3)],
    DST + "TlsIdentity": [(1, 3)],
    DST + "ProtocolHint": [(1, 3)],
    DST + "RequestMatch": [(1, 2, 3, 4, 5)],
    DST + "ResponseMatch": [(1, 2, 3, 4)],
    IN + "ProxyProtocol": [(1, 2, 3, 4, 5, 6)],
    IN + "Authn": [(1, 2)],
    IN + "Authn.PermitMeshTLS": [(1, 2)],
    IN + "HttpRoute.Filter": [(1, 2, 3)],
    IN + "GrpcRoute.Filter": [(1, 2)],
    OUT + "TrafficSpec": [(2, 3)],
    OUT + "ProxyProtocol": [(1, 2, 3, 4, 5, 6)],
    OUT + "HttpRoute.Filter": [(1, 2, 3, 4)],
    OUT + "HttpRoute.Distribution": [(1, 2, 3)],
    OUT + "GrpcRoute.Filter": [(1, 2)],
    OUT + "GrpcRoute.Distribution": [(1, 2, 3)],
    OUT + "OpaqueRoute.Filter": [(1, 2)],
    OUT + "OpaqueRoute.Distribution": [(1, 2, 3)],
    OUT + "TlsRoute.Filter": [(1, 2)],
    OUT + "TlsRoute.Distribution": [(1, 2, 3)],
    OUT + "Backend": [(2, 3)],
    OUT + "Backend.EndpointDiscovery": [(1,)],
    OUT + "Backend.BalanceP2c": [(2, 3)],
    OUT + "FailureAccrual": [(1, 2)],
    TAP + "ObserveRequest.Match": [(1, 2, 3, 4, 5, 6, 7, 8)],
    TAP + "ObserveRequest.Match.Tcp": [(1, 3)],
    TAP + "ObserveRequest.Match.Http": [(1, 2, 3, 4)],
    TAP + "ObserveRequest.Match.Http.StringMatch": [(1, 2)],
    TAP + "ObserveRequest.Extract": [(1,)],
    TAP + "ObserveRequest.Extract.Http": [(1,)],
    TAP + "Eos": [(1, 2)],
    TAP + "TapEvent": [(3,)],
    TAP + "TapEvent.Http": [(1, 2, 3)],
    TH + "SessionProtocol": [(1, 2)],
}

# Numbers the contract reserves.
RESERVED: dict[str, set[int]] = {
    DST + "TlsIdentity": {2},
    IN + "ProxyProtocol.Detect": {2},
    IN + "ProxyProtocol.Http1": {1},
    IN + "ProxyProtocol.Http2": {1},
    IN + "ProxyProtocol.Grpc": {1},
    OUT + "OpaqueRoute": {4},
    OUT + "OpaqueRoute.RouteBackend": {2},
    OUT + "TlsRoute": {4},
    OUT + "TlsRoute.RouteBackend": {2},
}

# ---------------------------------------------------------------------------------------
# Building fully populated messages with the generated classes.

MAX_DEPTH = 4


def _all_descriptors() -> Iterator[Descriptor]:
    def walk(descriptor: Descriptor) -> Iterator[Descriptor]:
        if descriptor.GetOptions().map_entry:
            return
        yield descriptor
        for nested in descriptor.nested_types:
            yield from walk(nested)

    for module in MODULES:
        for descriptor in module.DESCRIPTOR.message_types_by_name.values():
            yield from walk(descriptor)


DESCRIPTORS = {d.full_name: d for d in _all_descriptors()}


def _message_class(descriptor: Descriptor) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


def _scalar(field: Any) -> object:
    if field.type == FieldDescriptor.TYPE_STRING:
        return "s"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return b"b"
    if field.type == FieldDescriptor.TYPE_BOOL:
        return True
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return 0.5
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return max(v.number for v in field.enum_type.values)
    return 7


def fill(message: Message, variant: int, depth: int = 0) -> None:
    """Set every field (choosing oneof member ``variant`` modulo its size)."""
    descriptor = message.DESCRIPTOR
    for field in descriptor.fields:
        oneof = field.containing_oneof
        if oneof is not None and oneof.fields[variant % len(oneof.fields)] is not field:
            continue
        value = getattr(message, field.name)
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value["k1"] = "v1"
            value["k2"] = "v2"
        elif field.is_repeated and entry is not None:
            for _ in range(2):
                element = value.add()
                if depth < MAX_DEPTH:
                    fill(element, variant, depth + 1)
        elif field.is_repeated:
            value.extend([_scalar(field)] * 2)
        elif entry is not None:
            value.SetInParent()
            if depth < MAX_DEPTH:
                fill(value, variant, depth + 1)
        else:
            setattr(message, field.name, _scalar(field))


def variants(full_name: str) -> int:
    return max((len(o.fields) for o in DESCRIPTORS[full_name].oneofs), default=1)


def check_wire(data: bytes, full_name: str, path: str) -> set[int]:
    """Assert the bytes match SCHEMA[full_name], recursing into sub-messages."""
    schema = SCHEMA[full_name]
    counts: dict[int, int] = {}
    for number, wire_type, value in read_fields(data):
        assert number in schema, f"{path}: field number {number} is not in the contract"
        expected = schema[number]
        assert wire_type == expected.wire, (
            f"{path}.{number}: wire type {wire_type}, contract says {expected.wire}"
        )
        counts[number] = counts.get(number, 0) + 1
        if expected.is_map:
            assert isinstance(value, bytes)
            entry = sorted((n, w) for n, w, _ in read_fields(value))
            assert entry == [(1, LEN), (2, LEN)], (
                f"{path}.{number}: map entry must be string key 1 / string value 2"
            )
        elif expected.message is not None:
            assert isinstance(value, bytes)
            check_wire(value, expected.message, f"{path}.{number}")
    for number, count in counts.items():
        if schema[number].repeated:
            assert count == 2, f"{path}.{number}: repeated field sent {count} elements, not 2"
        else:
            assert count == 1, f"{path}.{number}: singular field appeared {count} times"
    return set(counts)


@pytest.mark.parametrize("full_name", sorted(DESCRIPTORS))
def test_every_field_has_contract_number_and_wire_type(full_name: str) -> None:
    cls = _message_class(DESCRIPTORS[full_name])
    seen: set[int] = set()
    for variant in range(variants(full_name)):
        message = cls()
        fill(message, variant)
        seen |= check_wire(message.SerializeToString(), full_name, full_name)
    assert seen == set(SCHEMA[full_name]), (
        f"{full_name}: fields on the wire {sorted(seen)}, contract {sorted(SCHEMA[full_name])}"
    )


@pytest.mark.parametrize("full_name", sorted(ONEOFS))
def test_oneof_members_replace_each_other_on_the_wire(full_name: str) -> None:
    descriptor = DESCRIPTORS[full_name]
    cls = _message_class(descriptor)
    for group in ONEOFS[full_name]:
        message = cls()
        for number in group:
            field = descriptor.fields_by_number[number]
            if field.message_type is not None:
                getattr(message, field.name).SetInParent()
            else:
                setattr(message, field.name, _scalar(field))
        on_wire = {n for n, _, _ in read_fields(message.SerializeToString())}
        assert on_wire == {group[-1]}, (
            f"{full_name}: after setting oneof members {group} the wire has {sorted(on_wire)}"
        )
    declared = sorted(tuple(f.number for f in o.fields) for o in descriptor.oneofs)
    assert declared == sorted(ONEOFS[full_name])


def test_contract_covers_every_generated_message() -> None:
    contract = {name for name in SCHEMA if not name.startswith("google.protobuf.")}
    assert set(DESCRIPTORS) == contract
    with_oneofs = {name for name, d in DESCRIPTORS.items() if d.oneofs}
    assert with_oneofs == set(ONEOFS)


@pytest.mark.parametrize("full_name", sorted(DESCRIPTORS))
def test_reserved_numbers(full_name: str) -> None:
    proto = DescriptorProto()
    DESCRIPTORS[full_name].CopyToProto(proto)
    reserved = {n for r in proto.reserved_range for n in range(r.start, r.end)}
    assert reserved == RESERVED.get(full_name, set())


def test_enum_numbers() -> None:
    method = http_types_pb2.HttpMethod
    assert list(range(9)) == [
        method.GET,
        method.POST,
        method.PUT,
        method.DELETE,
        method.PATCH,
        method.OPTIONS,
        method.CONNECT,
        method.HEAD,
        method.TRACE,
    ]
    assert (http_types_pb2.Scheme.HTTP, http_types_pb2.Scheme.HTTPS) == (0, 1)
    direction = tap_pb2.TapEvent
    assert (direction.UNKNOWN, direction.INBOUND, direction.OUTBOUND) == (0, 1, 2)
    wire = read_fields(http_types_pb2.HttpMethod(registered=method.TRACE).SerializeToString())
    assert wire == [(1, VARINT, 8)]


def test_fixed_width_values_are_big_endian_integers() -> None:
    ipv4 = read_fields(net_pb2.IPAddress(ipv4=0x0A010203).SerializeToString())
    assert ipv4 == [(1, I32, 0x0A010203)]
    ipv6 = net_pb2.IPAddress(ipv6=net_pb2.IPv6(first=0x20010DB800000000, last=1))
    ((number, wire_type, inner),) = read_fields(ipv6.SerializeToString())
    assert (number, wire_type) == (2, LEN)
    assert isinstance(inner, bytes)
    assert read_fields(inner) == [(1, I64, 0x20010DB800000000), (2, I64, 1)]


def test_weighted_addr_example_from_contract() -> None:
    addr = destination_pb2.WeightedAddr(
        weight=10000,
        tls_identity=destination_pb2.TlsIdentity(
            dns_like_identity=destination_pb2.TlsIdentity.DnsLikeIdentity(name="a.b")
        ),
    )
    wire = read_fields(addr.SerializeToString())
    assert [(n, w) for n, w, _ in wire] == [(3, VARINT), (5, LEN)]
    assert wire[0][2] == 10000
