"""Distributed tracing across two real proxies (outbound → inbound over mTLS on loopback).

Both proxies export to an OTLP/gRPC receiver written here (:mod:`otlp_receiver`). A
request that arrives with a sampled ``traceparent`` gives one CLIENT span from the outbound
proxy, the child of the app's span, and one SERVER span from the inbound proxy, the child
of the CLIENT span, all under the incoming trace id; the app behind the inbound proxy gets a
``traceparent`` whose parent is the inbound proxy's span. Requests without a sampled
context go through untouched and make no span. HTTP/1 and HTTP/2 take the same path.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
from gossamer_api.proxy import otlp_trace_pb2
from gossamer_proxy.app import Proxy
from gossamer_tls import (
    certificates_to_pem,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    private_key_to_pem,
)
from gossamer_tls.authority import Issuer, TrustMaterial
from otlp_receiver import OtlpReceiver, ReceivedSpan
from test_proxy_mesh_two_hop import CLIENT, SERVER, _echo_backend, _identity_env, read_response

StartProxy = Callable[..., Awaitable[Proxy]]
Backend = Callable[..., Awaitable[tuple[str, int]]]

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
APP_SPAN = "00f067aa0ba902b7"
SAMPLED = f"00-{TRACE}-{APP_SPAN}-01"
SPAN_CLIENT = otlp_trace_pb2.Span.SPAN_KIND_CLIENT
SPAN_SERVER = otlp_trace_pb2.Span.SPAN_KIND_SERVER


@pytest.fixture(scope="module")
def trust() -> TrustMaterial:
    return generate_trust_anchor_and_issuer(
        trust_domain="cluster.local",
        control_plane_namespace="gossamer",
        now=dt.datetime.now(dt.UTC),
    )


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    r = OtlpReceiver()
    await r.start()
    yield r
    await r.close()


def _collector(receiver: OtlpReceiver, service: str) -> dict[str, str]:
    return {
        "LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR": f"127.0.0.1:{receiver.port}",
        "LINKERD2_PROXY_TRACE_SERVICE_NAME": service,
        "GOSSAMER_PROXY_TRACE_BATCH_DELAY": "10ms",
    }


async def _traced_two_hop(
    start_proxy: StartProxy,
    trust: TrustMaterial,
    tmp_path: Path,
    receiver: OtlpReceiver,
    backend: tuple[str, int],
) -> tuple[Proxy, Proxy]:
    inbound = await start_proxy(
        **_identity_env(trust, tmp_path, SERVER),
        **_collector(receiver, "api"),
        GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"{backend[0]}:{backend[1]}",
    )
    outbound = await start_proxy(
        (inbound.inbound_addr.host, inbound.inbound_addr.port),
        **_identity_env(trust, tmp_path, CLIENT),
        **_collector(receiver, "web"),
        GOSSAMER_PROXY_OUTBOUND_FIXED_IDENTITY=SERVER,
    )
    return inbound, outbound


async def _get(proxy: Proxy, *headers: str) -> int:
    host, port = proxy.outbound_addr
    reader, writer = await asyncio.open_connection(host, port)
    try:
        extra = "".join(f"{h}\r\n" for h in headers)
        writer.write(f"GET /books/7?x=1 HTTP/1.1\r\nhost: api.test:80\r\n{extra}\r\n".encode())
        await writer.drain()
        status, _, _ = await asyncio.wait_for(read_response(reader), 10)
        return status
    finally:
        writer.close()


def _by_service(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    out = {s.service_name: s for s in spans}
    assert len(out) == len(spans), [s.service_name for s in spans]
    return out


def _assert_chain(spans: list[ReceivedSpan], app_traceparent: str) -> None:
    by = _by_service(spans)
    client, server = by["web"].span, by["api"].span
    assert client.kind == SPAN_CLIENT
    assert server.kind == SPAN_SERVER
    assert client.trace_id.hex() == TRACE
    assert server.trace_id.hex() == TRACE
    assert client.parent_span_id.hex() == APP_SPAN  # the app's span is the client's parent
    assert server.parent_span_id == client.span_id  # hop 1's client span → hop 2's server span
    assert app_traceparent == f"00-{TRACE}-{server.span_id.hex()}-01"
    assert client.start_time_unix_nano <= server.start_time_unix_nano
    assert server.end_time_unix_nano <= client.end_time_unix_nano


async def test_a_sampled_http1_request_is_traced_across_both_hops(
    start_proxy: StartProxy,
    tcp_server: Backend,
    trust: TrustMaterial,
    tmp_path: Path,
    receiver: OtlpReceiver,
) -> None:
    seen: list[dict[str, str]] = []
    backend = await _echo_backend(tcp_server, seen)
    _, outbound = await _traced_two_hop(start_proxy, trust, tmp_path, receiver, backend)
    assert await _get(outbound, f"traceparent: {SAMPLED}", "tracestate: rojo=1") == 200
    assert seen[0]["l5d-client-id"] == CLIENT  # the hop between the proxies was mTLS
    assert seen[0]["tracestate"] == "rojo=1"
    spans = await receiver.wait_for_spans(2)
    _assert_chain(spans, seen[0]["traceparent"])
    by = _by_service(spans)
    attrs = by["api"].attributes
    assert attrs["http.request.method"] == "GET"
    assert attrs["url.path"] == "/books/7"
    assert attrs["url.query"] == "x=1"
    assert attrs["server.address"] == "api.test"
    assert attrs["http.response.status_code"] == 200
    assert by["web"].span.name == "/books/7"
    assert by["web"].span.trace_state == "rojo=1"


async def test_b3_context_is_propagated_as_b3(
    start_proxy: StartProxy,
    tcp_server: Backend,
    trust: TrustMaterial,
    tmp_path: Path,
    receiver: OtlpReceiver,
) -> None:
    seen: list[dict[str, str]] = []
    backend = await _echo_backend(tcp_server, seen)
    _, outbound = await _traced_two_hop(start_proxy, trust, tmp_path, receiver, backend)
    assert await _get(outbound, f"b3: {TRACE}-{APP_SPAN}-1") == 200
    by = _by_service(await receiver.wait_for_spans(2))
    client, server = by["web"].span, by["api"].span
    assert client.parent_span_id.hex() == APP_SPAN
    assert server.parent_span_id == client.span_id
    assert seen[0]["b3"] == f"{TRACE}-{server.span_id.hex()}-1-{client.span_id.hex()}"
    assert "traceparent" not in seen[0]


async def test_unsampled_and_absent_contexts_pass_untouched_and_make_no_span(
    start_proxy: StartProxy,
    tcp_server: Backend,
    trust: TrustMaterial,
    tmp_path: Path,
    receiver: OtlpReceiver,
) -> None:
    seen: list[dict[str, str]] = []
    backend = await _echo_backend(tcp_server, seen)
    inbound, outbound = await _traced_two_hop(start_proxy, trust, tmp_path, receiver, backend)
    unsampled = f"00-{TRACE}-{APP_SPAN}-00"
    assert await _get(outbound, f"traceparent: {unsampled}") == 200
    assert await _get(outbound, "traceparent: 00-garbage") == 200
    assert await _get(outbound) == 200
    assert [h.get("traceparent") for h in seen] == [unsampled, "00-garbage", None]
    # Shutting down flushes whatever is queued: still nothing.
    await outbound.shutdown()
    await inbound.shutdown()
    assert receiver.spans() == []


async def _h2_backend(tcp_server: Backend, seen: list[dict[bytes, bytes]]) -> tuple[str, int]:
    """An HTTP/2 (prior knowledge) server recording request headers, answering 200."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        seen.append(dict(event.headers))
                        conn.send_headers(event.stream_id, [(b":status", b"200")], end_stream=True)
                writer.write(conn.data_to_send())
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await tcp_server(handle)


async def _h2_get(proxy: Proxy, traceparent: str) -> int:
    host, port = proxy.outbound_addr
    reader, writer = await asyncio.open_connection(host, port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(
        1,
        [
            (b":method", b"GET"),
            (b":path", b"/h2"),
            (b":scheme", b"http"),
            (b":authority", b"api.test:80"),
            (b"traceparent", traceparent.encode()),
        ],
        end_stream=True,
    )
    writer.write(conn.data_to_send())
    try:
        async with asyncio.timeout(10):
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        return int(dict(event.headers)[b":status"])
                writer.write(conn.data_to_send())
        raise AssertionError("no response")
    finally:
        writer.close()


async def test_a_sampled_http2_request_is_traced_across_both_hops(
    start_proxy: StartProxy,
    tcp_server: Backend,
    trust: TrustMaterial,
    tmp_path: Path,
    receiver: OtlpReceiver,
) -> None:
    seen: list[dict[bytes, bytes]] = []
    backend = await _h2_backend(tcp_server, seen)
    _, outbound = await _traced_two_hop(start_proxy, trust, tmp_path, receiver, backend)
    assert await _h2_get(outbound, SAMPLED) == 200
    spans = await receiver.wait_for_spans(2)
    _assert_chain(spans, seen[0][b"traceparent"].decode())
    assert _by_service(spans)["api"].span.name == "/h2"


COLLECTOR = "collector.gossamer-jaeger.serviceaccount.identity.gossamer.cluster.local"


def _collector_tls(trust: TrustMaterial, name: str) -> ssl.SSLContext:
    """The receiver's TLS: a certificate for ``name``; client certificates required."""
    key = generate_private_key()
    issuer = Issuer(trust.issuer.certificate, trust.issuer.private_key)
    issued = issuer.sign_leaf(key.public_key(), name, now=dt.datetime.now(dt.UTC))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(
        cadata=certificates_to_pem([trust.trust_anchor.certificate]).decode()
    )
    context.set_alpn_protocols(["h2"])
    key_fd, chain_fd = os.memfd_create("key"), os.memfd_create("chain")
    try:
        os.write(key_fd, private_key_to_pem(key))
        os.write(chain_fd, certificates_to_pem([issued.certificate, trust.issuer.certificate]))
        context.load_cert_chain(f"/proc/self/fd/{chain_fd}", f"/proc/self/fd/{key_fd}")
    finally:
        os.close(key_fd)
        os.close(chain_fd)
    return context


async def _inbound_with_tls_collector(
    start_proxy: StartProxy,
    trust: TrustMaterial,
    tmp_path: Path,
    tcp_server: Backend,
    expected_collector: str,
) -> tuple[Proxy, OtlpReceiver, list[dict[str, str]]]:
    receiver = OtlpReceiver()
    await receiver.start(_collector_tls(trust, COLLECTOR))
    seen: list[dict[str, str]] = []
    backend = await _echo_backend(tcp_server, seen)
    inbound = await start_proxy(
        **_identity_env(trust, tmp_path, SERVER),
        **_collector(receiver, "api"),
        LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME=expected_collector,
        GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"{backend[0]}:{backend[1]}",
    )
    return inbound, receiver, seen


async def _plain_get(proxy: Proxy) -> int:
    host, port = proxy.inbound_addr
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET / HTTP/1.1\r\nhost: api\r\ntraceparent: {SAMPLED}\r\n\r\n".encode())
        status, _, _ = await asyncio.wait_for(read_response(reader), 10)
        return status
    finally:
        writer.close()


async def test_spans_go_to_the_collector_over_mtls_with_its_identity(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    inbound, receiver, _ = await _inbound_with_tls_collector(
        start_proxy, trust, tmp_path, tcp_server, COLLECTOR
    )
    try:
        assert await _plain_get(inbound) == 200
        (span,) = await receiver.wait_for_spans(1)
        assert span.service_name == "api"
        assert span.span.parent_span_id.hex() == APP_SPAN
        assert receiver.client_identities == [SERVER]  # the proxy's own certificate
    finally:
        await receiver.close()


async def test_a_collector_with_another_identity_gets_nothing_and_requests_still_pass(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    other = "evil.gossamer-jaeger.serviceaccount.identity.gossamer.cluster.local"
    inbound, receiver, seen = await _inbound_with_tls_collector(
        start_proxy, trust, tmp_path, tcp_server, other
    )
    try:
        assert await _plain_get(inbound) == 200
        assert seen[0]["traceparent"].startswith(f"00-{TRACE}-")
        exporter = inbound._span_exporter
        assert exporter is not None
        async with asyncio.timeout(10):
            while exporter.failed_spans < 1:  # noqa: ASYNC110 - bounded poll
                await asyncio.sleep(0.01)
        assert receiver.requests == []
    finally:
        await receiver.close()
