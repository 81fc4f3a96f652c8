"""l5d headers, ClientHello detection, transport plans, endpoint updates and idle tracking."""

from __future__ import annotations

import ipaddress
import ssl

import pytest
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import destination_pb2, net_pb2
from gossamer_api.transport_header import (
    SessionProtocol,
    TransportHeader,
    decode_transport_header,
)
from gossamer_proxy.http1.headers import HeaderError, analyze
from gossamer_proxy.http2.orig_proto import downgrade_request, upgraded_response_headers
from gossamer_proxy.mesh.endpoints import Endpoint, EndpointTable
from gossamer_proxy.mesh.idle import IdleTracker
from gossamer_proxy.mesh.l5d_headers import (
    OrigProto,
    decode_orig_proto,
    encode_orig_proto,
    inbound_request_headers,
    outbound_request_headers,
    parse_duration,
    proxy_error_headers,
    required_identity_error,
)
from gossamer_proxy.mesh.tls_detect import ClientHello, NeedMore, NotTls, detect_client_hello
from gossamer_proxy.mesh.transport import (
    ALPN_PROTOCOL,
    TransportError,
    inbound_forward,
    plan_connect,
)

ID = "web.ns.serviceaccount.identity.gossamer.cluster.local"


# --- l5d headers -----------------------------------------------------------------------------


def test_outbound_overrides_honoured_only_when_allowed_and_always_stripped() -> None:
    headers = [
        (b"host", b"web"),
        (b"l5d-retry-http", b"5xx,429"),
        (b"L5d-Retry-Limit", b"3"),
        (b"l5d-retry-grpc", b"unavailable, deadline-exceeded"),
        (b"l5d-timeout", b"1.5s"),
        (b"l5d-response-timeout", b"250ms"),
        (b"l5d-retry-timeout", b"100ms"),
    ]
    forwarded, directives = outbound_request_headers(headers, allow_overrides=True)
    assert forwarded == [(b"host", b"web")]
    assert directives.retry_http == ((500, 599), (429, 429))
    assert directives.retry_limit == 3
    assert directives.retry_grpc == frozenset({14, 4})
    assert directives.request_timeout == 1.5
    assert directives.response_timeout == 0.25
    assert directives.retry_timeout == pytest.approx(0.1)
    forwarded, directives = outbound_request_headers(headers, allow_overrides=False)
    assert forwarded == [(b"host", b"web")]
    assert directives.retry_http is None
    assert directives.request_timeout is None


def test_malformed_overrides_are_dropped_and_reported() -> None:
    headers = [(b"l5d-timeout", b"soon"), (b"l5d-retry-http", b"6xx"), (b"l5d-retry-grpc", b"nope")]
    forwarded, directives = outbound_request_headers(headers, allow_overrides=True)
    assert forwarded == []
    assert directives.request_timeout is None
    assert len(directives.errors) == 3
    assert "l5d-timeout" in directives.errors[0]


def test_require_id_and_dst_override() -> None:
    headers = [
        (b"l5d-require-id", ID.encode()),
        (b"l5d-dst-override", b"web.ns.svc.cluster.local:80"),
        (b"l5d-dst-canonical", b"old:80"),
    ]
    forwarded, directives = outbound_request_headers(headers, allow_overrides=False)
    assert directives.require_identity == ID
    assert directives.dst_override is None  # not in ingress mode
    assert forwarded == [(b"l5d-dst-canonical", b"old:80")]
    forwarded, directives = outbound_request_headers(
        headers, allow_overrides=False, ingress_mode=True
    )
    assert directives.dst_override == "web.ns.svc.cluster.local:80"
    assert forwarded == []  # canonical dst stripped on authority override


def test_required_identity_needs_mtls_with_exactly_that_identity() -> None:
    assert required_identity_error(ID, ID) is None
    plaintext = required_identity_error(ID, None)
    assert plaintext is not None
    assert "not meshed" in plaintext
    other = required_identity_error(ID, "db.ns.serviceaccount.identity.gossamer.cluster.local")
    assert other is not None
    assert "db.ns" in other
    # No normalisation: a case or trailing-dot variant is another name.
    assert required_identity_error(ID, ID.upper()) is not None
    assert required_identity_error(ID + ".", ID) is not None


def test_inbound_client_id_is_replaced_never_trusted() -> None:
    spoofed = [(b"l5d-client-id", b"admin.evil"), (b"accept", b"*/*")]
    assert inbound_request_headers(spoofed, None) == [(b"accept", b"*/*")]
    assert inbound_request_headers(spoofed, ID) == [
        (b"accept", b"*/*"),
        (b"l5d-client-id", ID.encode()),
    ]


def test_orig_proto_round_trip() -> None:
    header = encode_orig_proto(OrigProto("HTTP/1.1", absolute_form=True))
    assert header == (b"l5d-orig-proto", b"HTTP/1.1; absolute-form")
    found, rest = decode_orig_proto([header, (b"x", b"y")])
    assert found == OrigProto("HTTP/1.1", True)
    assert rest == [(b"x", b"y")]
    found, rest = decode_orig_proto([(b"l5d-orig-proto", b"HTTP/3")])
    assert found is None
    assert rest == []


def test_proxy_error_headers_are_safe() -> None:
    assert proxy_error_headers("bad\r\nthing", close=True) == [
        (b"l5d-proxy-error", b"bad  thing"),
        (b"l5d-proxy-connection", b"close"),
    ]
    assert parse_duration("2m") == 120.0
    with pytest.raises(ValueError, match="duration"):
        parse_duration("10")


# --- ClientHello detection -------------------------------------------------------------------


def client_hello(server_name: str | None, alpn: list[str]) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_detects_sni_and_alpn_from_a_real_client_hello() -> None:
    data = client_hello(ID, [ALPN_PROTOCOL])
    assert detect_client_hello(data) == ClientHello(ID, (ALPN_PROTOCOL,))
    assert detect_client_hello(client_hello(None, [])) == ClientHello(None, ())


def test_partial_client_hello_needs_more() -> None:
    data = client_hello(ID, ["h2"])
    for cut in (1, 4, 5, 40, len(data) - 1):
        result = detect_client_hello(data[:cut])
        assert isinstance(result, NeedMore), cut
        assert result.at_least > cut
    assert detect_client_hello(b"") == NeedMore(1)


def test_fragmented_handshake_records_are_reassembled() -> None:
    data = client_hello(ID, [])
    body = data[5:]
    half = len(body) // 2
    fragmented = (
        b"\x16\x03\x01"
        + half.to_bytes(2, "big")
        + body[:half]
        + b"\x16\x03\x01"
        + (len(body) - half).to_bytes(2, "big")
        + body[half:]
    )
    assert detect_client_hello(fragmented) == ClientHello(ID, ())


def test_plaintext_and_garbage_are_not_tls() -> None:
    assert isinstance(detect_client_hello(b"GET / HTTP/1.1\r\n"), NotTls)
    assert isinstance(detect_client_hello(b"PRI * HTTP/2.0\r\n"), NotTls)
    assert isinstance(detect_client_hello(b"\x16\x02\x00\x00\x01x"), NotTls)
    assert isinstance(detect_client_hello(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00"), NotTls)
    truncated_inside = b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00"
    result = detect_client_hello(truncated_inside)
    assert isinstance(result, NotTls)
    assert "malformed" in result.reason


# --- transport planning ----------------------------------------------------------------------


def endpoint(**kwargs: object) -> Endpoint:
    return Endpoint(ip=ipaddress.ip_address("10.1.0.9"), port=8080, **kwargs)  # type: ignore[arg-type]


def test_meshed_endpoint_with_opaque_transport_uses_inbound_port_and_header() -> None:
    plan = plan_connect(
        endpoint(identity=ID, server_name=ID, opaque_transport_port=4143, protocol_hint="h2"),
        session_protocol=SessionProtocol.HTTP2,
    )
    assert (plan.host, plan.port, plan.sni, plan.alpn) == ("10.1.0.9", 4143, ID, (ALPN_PROTOCOL,))
    decoded = decode_transport_header(plan.preamble)
    assert decoded.header == TransportHeader(8080, "", SessionProtocol.HTTP2)
    opaque = plan_connect(
        endpoint(identity=ID, opaque_transport_port=4143, protocol_hint="opaque"),
        session_protocol=None,
    )
    assert decode_transport_header(opaque.preamble).header.session_protocol is None


def test_plain_and_tls_without_transport() -> None:
    plain = plan_connect(endpoint(), session_protocol=SessionProtocol.HTTP1)
    assert (plain.port, plain.server_identity, plain.preamble, plain.sni) == (8080, None, b"", None)
    tls = plan_connect(endpoint(identity=ID), session_protocol=SessionProtocol.HTTP1)
    assert (tls.port, tls.server_identity, tls.sni, tls.alpn) == (8080, ID, ID, ())


def test_require_id_mismatch_is_refused() -> None:
    with pytest.raises(TransportError, match="l5d-require-id"):
        plan_connect(endpoint(identity=ID), session_protocol=None, require_identity="other")


def test_inbound_forward_refuses_gateway_names_unless_allowed() -> None:
    assert inbound_forward(TransportHeader(8080)).port == 8080
    named = TransportHeader(80, "web.ns.svc.cluster.local")
    with pytest.raises(TransportError, match="not a gateway"):
        inbound_forward(named)
    with pytest.raises(TransportError):
        inbound_forward(named, gateway_suffixes=("xsvc.cluster.local.",))
    assert inbound_forward(named, gateway_suffixes=("svc.cluster.local.",)).port == 80


@pytest.mark.parametrize("empty", ["", ".", ".."])
def test_an_empty_gateway_suffix_matches_no_name(empty: str) -> None:
    named = TransportHeader(80, "anything.example.com")
    with pytest.raises(TransportError, match="not a gateway"):
        inbound_forward(named, gateway_suffixes=(empty,))
    with pytest.raises(TransportError, match="not a gateway"):
        inbound_forward(named, gateway_suffixes=(empty, "svc.cluster.local."))
    local = TransportHeader(80, "web.ns.svc.cluster.local")
    assert inbound_forward(local, gateway_suffixes=(empty, "svc.cluster.local.")).port == 80


# --- endpoint updates ------------------------------------------------------------------------


def add(
    *addrs: tuple[str, int], labels: dict[str, str] | None = None, **extra: object
) -> destination_pb2.Update:
    weighted = [
        destination_pb2.WeightedAddr(addr=tcp_address_to_proto(ip, port), weight=10000, **extra)  # type: ignore[arg-type]
        for ip, port in addrs
    ]
    return destination_pb2.Update(
        add=destination_pb2.WeightedAddrSet(addrs=weighted, metric_labels=labels or {})
    )


def remove(*addrs: tuple[str, int]) -> destination_pb2.Update:
    return destination_pb2.Update(
        remove=destination_pb2.AddrSet(addrs=[tcp_address_to_proto(ip, p) for ip, p in addrs])
    )


def test_add_remove_dedupe_and_no_endpoints() -> None:
    table = EndpointTable()
    assert not table.known
    assert table.apply(add(("10.0.0.1", 80), ("10.0.0.2", 80), labels={"service": "web"})).changed
    assert not table.apply(add(("10.0.0.1", 80), labels={"service": "web"})).changed  # duplicate
    assert len(table.endpoints) == 2
    endpoint_labels = next(iter(table.endpoints.values())).metric_labels
    assert endpoint_labels == {"dst_service": "web"}
    assert table.apply(remove(("10.0.0.1", 80))).changed
    assert not table.apply(remove(("10.0.0.9", 80))).changed
    table.apply(destination_pb2.Update(no_endpoints=destination_pb2.NoEndpoints(exists=False)))
    assert table.endpoints == {}
    assert table.exists is False


def test_endpoint_identity_hints_and_bad_addresses() -> None:
    tls = destination_pb2.TlsIdentity(
        dns_like_identity=destination_pb2.TlsIdentity.DnsLikeIdentity(name=ID),
    )
    hint = destination_pb2.ProtocolHint(
        h2=destination_pb2.ProtocolHint.H2(),
        opaque_transport=destination_pb2.ProtocolHint.OpaqueTransport(inbound_port=4143),
    )
    table = EndpointTable()
    result = table.apply(add(("10.0.0.1", 80), tls_identity=tls, protocol_hint=hint))
    (only,) = table.endpoints.values()
    assert (only.identity, only.sni, only.protocol_hint, only.opaque_transport_port) == (
        ID,
        ID,
        "h2",
        4143,
    )
    bad = destination_pb2.Update(
        add=destination_pb2.WeightedAddrSet(
            addrs=[
                destination_pb2.WeightedAddr(addr=net_pb2.TcpAddress(port=80)),
                destination_pb2.WeightedAddr(addr=tcp_address_to_proto("10.0.0.3", 80)),
            ]
        )
    )
    result = table.apply(bad)
    assert result.changed
    assert len(result.errors) == 1
    assert len(table.endpoints) == 2  # the good one of the batch was kept


def test_resync_replaces_the_set_with_the_first_add_after_reconnect() -> None:
    table = EndpointTable()
    table.apply(add(("10.0.0.1", 80), ("10.0.0.2", 80)))
    table.begin_resync()
    assert len(table.endpoints) == 2  # still served while reconnecting
    table.apply(add(("10.0.0.2", 80), ("10.0.0.3", 80)))
    assert sorted(str(ip) for ip, _ in table.endpoints) == ["10.0.0.2", "10.0.0.3"]
    table.apply(add(("10.0.0.4", 80)))  # later adds merge again
    assert len(table.endpoints) == 3


# --- idle tracking ---------------------------------------------------------------------------


def test_idle_tracker_refcounts_pins_and_expires() -> None:
    idle: IdleTracker[str] = IdleTracker(5.0)
    assert idle.acquire("a", 0.0)
    assert not idle.acquire("a", 1.0)
    idle.release("a", 2.0)
    assert idle.expired(100.0) == []  # still one user
    idle.release("a", 3.0)
    assert idle.next_expiry() == 8.0
    assert idle.expired(7.9) == []
    assert idle.expired(8.0) == ["a"]
    idle.pin("p", 0.0)
    assert idle.expired(1000.0) == []
    with pytest.raises(KeyError, match="without a matching acquire"):
        idle.release("zzz", 0.0)


def test_downgraded_request_head_from_h2_headers() -> None:
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"web.ns:8080"),
        (b":path", b"/p?q=1"),
        (b"l5d-orig-proto", b"HTTP/1.1"),
        (b"x-a", b"1"),
    ]
    streamed = downgrade_request(
        headers, OrigProto("HTTP/1.1"), ended=False, default_host=b"10.0.0.1:80"
    )
    assert streamed.head == (
        b"POST /p?q=1 HTTP/1.1\r\nx-a: 1\r\nhost: web.ns:8080\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    assert (streamed.chunked, streamed.has_body, streamed.is_head) == (True, True, False)
    sized = downgrade_request(
        [*headers, (b"content-length", b"3")], OrigProto("HTTP/1.1"), ended=False, default_host=b""
    )
    assert sized.head.endswith(b"content-length: 3\r\n\r\n")
    assert not sized.chunked
    absolute = downgrade_request(
        headers, OrigProto("HTTP/1.1", absolute_form=True), ended=True, default_host=b""
    )
    assert absolute.head.startswith(b"POST http://web.ns:8080/p?q=1 HTTP/1.1\r\n")
    assert b"transfer-encoding" not in absolute.head
    with pytest.raises(HeaderError):
        downgrade_request(
            [(b":method", b"CONNECT")], OrigProto("HTTP/1.1"), ended=True, default_host=b""
        )


def test_upgraded_response_headers_echo_orig_proto() -> None:
    info = analyze([(b"Content-Length", b"2"), (b"Connection", b"close"), (b"X-App", b"1")])
    assert upgraded_response_headers(200, info, "1.0") == [
        (b":status", b"200"),
        (b"x-app", b"1"),
        (b"content-length", b"2"),
        (b"l5d-orig-proto", b"HTTP/1.0"),
    ]
    assert upgraded_response_headers(100, analyze([]), "1.1") == [(b":status", b"100")]
