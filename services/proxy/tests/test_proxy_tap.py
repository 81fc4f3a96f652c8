"""Tap over real mTLS: two proxies on loopback with static identities, and tap clients.

client → outbound proxy ==mTLS==> inbound proxy → backend, both proxies tap-enabled
(``LINKERD2_PROXY_TAP_SVC_NAME``). Tap clients speak gRPC over TLS 1.3 to the control
listener with certificates from the same ``gossamer_tls`` CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import h2.config
import h2.connection
import pytest
from gossamer_api.proxy import tap_pb2
from gossamer_api.proxy.tap_grpc import TapStub
from gossamer_proxy.app import Proxy
from gossamer_tls import TrustMaterial
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from mesh_pki import anchors_pem, issue

StartProxy = Callable[..., Awaitable[Proxy]]
Backend = Callable[..., Awaitable[tuple[str, int]]]
TapEvent = tap_pb2.TapEvent

pytestmark = pytest.mark.timeout(120)

CLIENT = "web.demo.serviceaccount.identity.gossamer.cluster.local"
SERVER = "api.demo.serviceaccount.identity.gossamer.cluster.local"
TAP = "tap.gossamer-viz.serviceaccount.identity.gossamer.cluster.local"
OTHER = "db.demo.serviceaccount.identity.gossamer.cluster.local"


def _proxy_env(trust: TrustMaterial, tmp: Path, name: str) -> dict[str, str]:
    cert_file, key_file = issue(trust, tmp, name)
    return {
        "LINKERD2_PROXY_IDENTITY_LOCAL_NAME": name,
        "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": anchors_pem(trust),
        "GOSSAMER_PROXY_IDENTITY_CERT_FILE": str(cert_file),
        "GOSSAMER_PROXY_IDENTITY_KEY_FILE": str(key_file),
        "LINKERD2_PROXY_TAP_SVC_NAME": TAP,
        "LINKERD2_PROXY_CONTROL_LISTEN_ADDR": "127.0.0.1:0",
    }


def _client_tls(trust: TrustMaterial, tmp: Path, name: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=anchors_pem(trust))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["h2"])
    if name is not None:
        cert_file, key_file = issue(trust, tmp, name)
        context.load_cert_chain(cert_file, key_file)
    return context


def _channel(proxy: Proxy, context: ssl.SSLContext, server_name: str) -> Channel:
    assert proxy.tap_server is not None
    config = Configuration(ssl_target_name_override=server_name)
    return Channel("127.0.0.1", proxy.tap_server.port, ssl=context, config=config)


async def _backend(tcp_server: Backend) -> tuple[str, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await tcp_server(handle)


async def _mesh(
    start_proxy: StartProxy, trust: TrustMaterial, tmp: Path, backend: tuple[str, int]
) -> tuple[Proxy, Proxy]:
    inbound = await start_proxy(
        **_proxy_env(trust, tmp, SERVER),
        GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"{backend[0]}:{backend[1]}",
    )
    outbound = await start_proxy(
        (inbound.inbound_addr.host, inbound.inbound_addr.port),
        **_proxy_env(trust, tmp, CLIENT),
        GOSSAMER_PROXY_OUTBOUND_FIXED_IDENTITY=SERVER,
    )
    return inbound, outbound


async def _requests(proxy: Proxy, paths: list[str]) -> list[int]:
    """HTTP/1.1 requests on one keep-alive connection; their statuses."""
    reader, writer = await asyncio.open_connection(*proxy.outbound_addr)
    statuses = []
    try:
        for path in paths:
            writer.write(f"GET {path} HTTP/1.1\r\nhost: api.demo:80\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            await reader.readexactly(5)
            statuses.append(int(head.split(b" ", 2)[1]))
    finally:
        writer.close()
    return statuses


async def _tap_events(
    channel: Channel, request: tap_pb2.ObserveRequest, count: int, started: asyncio.Event
) -> list[TapEvent]:
    events: list[TapEvent] = []
    async with TapStub(channel).Observe.open() as stream:
        await stream.send_message(request, end=True)
        await stream.recv_initial_metadata()
        started.set()
        while len(events) < count:
            event = await stream.recv_message()
            assert event is not None
            events.append(event)
    return events


async def _until_tapping(proxy: Proxy, taps: int = 1) -> None:
    async with asyncio.timeout(10):
        while proxy.taps is None or len(proxy.taps.active) < taps:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_tap_identity_sees_real_requests_on_both_sides(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    inbound, outbound = await _mesh(start_proxy, trust, tmp_path, await _backend(tcp_server))
    context = _client_tls(trust, tmp_path, TAP)
    in_channel = _channel(inbound, context, SERVER)
    out_channel = _channel(outbound, context, CLIENT)
    path_match = tap_pb2.ObserveRequest.Match(
        http=tap_pb2.ObserveRequest.Match.Http(
            path=tap_pb2.ObserveRequest.Match.Http.StringMatch(prefix="/books")
        )
    )
    request = tap_pb2.ObserveRequest(limit=2, match=path_match)
    ready_in, ready_out = asyncio.Event(), asyncio.Event()
    try:
        in_task = asyncio.ensure_future(_tap_events(in_channel, request, 6, ready_in))
        out_task = asyncio.ensure_future(_tap_events(out_channel, request, 6, ready_out))
        await _until_tapping(inbound)
        await _until_tapping(outbound)
        statuses = await _requests(outbound, ["/other", "/books/1", "/books/2", "/books/3"])
        assert statuses == [200] * 4
        async with asyncio.timeout(20):
            in_events, out_events = await asyncio.gather(in_task, out_task)
    finally:
        in_channel.close()
        out_channel.close()
    kinds = [e.http.WhichOneof("event") for e in in_events]
    assert kinds == ["request_init", "response_init", "response_end"] * 2
    inits = [e.http.request_init for e in in_events if e.http.HasField("request_init")]
    assert [i.path for i in inits] == ["/books/1", "/books/2"]  # /other unmatched; limit 2
    first = in_events[0]
    assert first.proxy_direction == TapEvent.INBOUND
    assert first.source_meta.labels["tls"] == "true"
    assert first.source_meta.labels["client_id"] == CLIENT
    rsp = in_events[1].http.response_init
    end = in_events[2].http.response_end
    assert rsp.http_status == 200
    assert end.response_bytes == 5
    assert end.since_request_init.ToNanoseconds() >= rsp.since_request_init.ToNanoseconds()
    assert end.id == inits[0].id
    out_first = out_events[0]
    assert out_first.proxy_direction == TapEvent.OUTBOUND
    assert out_first.destination_meta.labels["tls"] == "true"
    assert out_first.destination_meta.labels["server_id"] == SERVER
    assert out_first.destination.port == inbound.inbound_addr.port
    # Both taps ended (limit used up): the request path is back to no observers.
    async with asyncio.timeout(10):
        while inbound.taps is not None and inbound.taps.active:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert all(ctx.observers is None for ctx in inbound.contexts)


async def test_other_identities_are_refused(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    inbound, _ = await _mesh(start_proxy, trust, tmp_path, await _backend(tcp_server))
    channel = _channel(inbound, _client_tls(trust, tmp_path, OTHER), SERVER)
    try:
        with pytest.raises(GRPCError) as refused:
            async with asyncio.timeout(10):
                await TapStub(channel).Observe(tap_pb2.ObserveRequest(limit=1))
        assert refused.value.status is Status.PERMISSION_DENIED
    finally:
        channel.close()
    # No client certificate at all: the handshake itself fails.
    anonymous = _channel(inbound, _client_tls(trust, tmp_path, None), SERVER)
    try:
        with pytest.raises((ssl.SSLError, OSError, StreamTerminatedError)):
            async with asyncio.timeout(10):
                await TapStub(anonymous).Observe(tap_pb2.ObserveRequest(limit=1))
    finally:
        anonymous.close()
    assert inbound.taps is not None
    assert not inbound.taps.active


async def test_bad_requests_are_invalid_arguments(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    inbound, _ = await _mesh(start_proxy, trust, tmp_path, await _backend(tcp_server))
    channel = _channel(inbound, _client_tls(trust, tmp_path, TAP), SERVER)
    bad_match = tap_pb2.ObserveRequest.Match(http=tap_pb2.ObserveRequest.Match.Http())
    try:
        for request in (
            tap_pb2.ObserveRequest(limit=0),
            tap_pb2.ObserveRequest(limit=1, match=bad_match),
        ):
            with pytest.raises(GRPCError) as refused:
                async with asyncio.timeout(10):
                    await TapStub(channel).Observe(request)
            assert refused.value.status is Status.INVALID_ARGUMENT
    finally:
        channel.close()


async def _stalled_tap(proxy: Proxy, context: ssl.SSLContext) -> asyncio.StreamWriter:
    """Open ``Observe`` (extracting headers) over raw HTTP/2, then never read again."""
    assert proxy.tap_server is not None
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", proxy.tap_server.port, ssl=context, server_hostname=SERVER
    )
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    request = tap_pb2.ObserveRequest(limit=1_000_000)
    request.extract.http.headers.SetInParent()
    body = request.SerializeToString()
    conn.send_headers(
        1,
        [
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", SERVER),
            (":path", "/io.linkerd.proxy.tap.Tap/Observe"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ],
    )
    conn.send_data(1, struct.pack(">?I", False, len(body)) + body, end_stream=True)
    writer.write(conn.data_to_send())
    await writer.drain()
    del reader  # never read: the proxy's sends back up into its queue, then drop
    return writer


async def test_a_tap_client_that_never_reads_does_not_stall_requests(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    inbound, outbound = await _mesh(start_proxy, trust, tmp_path, await _backend(tcp_server))
    writer = await _stalled_tap(inbound, _client_tls(trust, tmp_path, TAP))
    try:
        await _until_tapping(inbound)
        long_path = "/load/" + "x" * 2000  # big events fill the client's windows sooner
        batches = [[long_path] * 100 for _ in range(8)]  # 800 requests, 8 connections
        async with asyncio.timeout(60):
            results = await asyncio.gather(*(_requests(outbound, b) for b in batches))
        assert [s for batch in results for s in batch] == [200] * 800
        assert inbound.taps is not None
        (tap,) = inbound.taps.active
        assert tap.dropped > 0  # the client really was not reading
        assert len(tap.queue) <= tap.capacity
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
