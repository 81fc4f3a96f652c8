"""Discovered endpoints with a TLS identity are reached over mesh mTLS.

A client proxy resolves a "ClusterIP" through a test-driven Destination servicer whose
endpoints carry ``tls_identity`` and ``opaque_transport.inbound_port``: the client proxy
must connect to the server proxy's inbound port with SNI = identity, check the identity,
send a transport header naming the real port, keep HTTP/1.1, and label its metrics
``tls="true",server_id=<identity>``. An endpoint claiming another identity is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from google.protobuf.duration_pb2 import Duration
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import destination_pb2, destination_pb2_grpc
from gossamer_proxy.app import Proxy
from gossamer_tls import (
    Issuer,
    TrustMaterial,
    certificates_to_pem,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    private_key_to_pem,
)

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]

CLIENT = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"
SERVER = "api.emojivoto.serviceaccount.identity.gossamer.cluster.local"
OTHER = "db.emojivoto.serviceaccount.identity.gossamer.cluster.local"
CLUSTER_IP = "127.0.0.78:80"
AUTHORITY = "api.emojivoto.svc.cluster.local:80"


class Destination(destination_pb2_grpc.DestinationServicer):
    """Answers from fixed tables and then holds the stream open."""

    def __init__(self) -> None:
        self.profiles: dict[str, Any] = {}
        self.endpoints: dict[str, Any] = {}

    async def GetProfile(self, request: Any, context: Any) -> AsyncIterator[Any]:
        yield self.profiles[request.path]
        await asyncio.Event().wait()

    async def Get(self, request: Any, context: Any) -> AsyncIterator[Any]:
        yield self.endpoints[request.path]
        await asyncio.Event().wait()


@pytest.fixture
async def destination() -> AsyncIterator[tuple[Destination, str]]:
    servicer = Destination()
    server = grpc.aio.server()
    destination_pb2_grpc.add_DestinationServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture(scope="module")
def trust() -> TrustMaterial:
    return generate_trust_anchor_and_issuer(
        trust_domain="cluster.local",
        control_plane_namespace="gossamer",
        now=dt.datetime.now(dt.UTC),
    )


def identity_env(trust: TrustMaterial, tmp: Path, name: str) -> dict[str, str]:
    key = generate_private_key()
    issued = Issuer(trust.issuer.certificate, trust.issuer.private_key).sign_leaf(
        key.public_key(),
        name,
        now=dt.datetime.now(dt.UTC),
        lifetime=dt.timedelta(hours=1),
        clock_skew=dt.timedelta(seconds=5),
    )
    chain = [x509.load_der_x509_certificate(issued.leaf_der)] + [
        x509.load_der_x509_certificate(der) for der in issued.intermediates_der
    ]
    (tmp / f"{name}.crt").write_bytes(certificates_to_pem(chain))
    (tmp / f"{name}.key").write_bytes(private_key_to_pem(key))
    return {
        "LINKERD2_PROXY_IDENTITY_LOCAL_NAME": name,
        "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": certificates_to_pem(
            [trust.trust_anchor.certificate]
        ).decode(),
        "GOSSAMER_PROXY_IDENTITY_CERT_FILE": str(tmp / f"{name}.crt"),
        "GOSSAMER_PROXY_IDENTITY_KEY_FILE": str(tmp / f"{name}.key"),
    }


def endpoint(port: int, identity: str, inbound_port: int) -> destination_pb2.Update:
    addr = destination_pb2.WeightedAddr(
        addr=tcp_address_to_proto("127.0.0.1", port),
        weight=10000,
        metric_labels={"pod": "api-0"},
        tls_identity=destination_pb2.TlsIdentity(
            dns_like_identity=destination_pb2.TlsIdentity.DnsLikeIdentity(name=identity)
        ),
        protocol_hint=destination_pb2.ProtocolHint(
            opaque_transport=destination_pb2.ProtocolHint.OpaqueTransport(inbound_port=inbound_port)
        ),
    )
    return destination_pb2.Update(
        add=destination_pb2.WeightedAddrSet(addrs=[addr], metric_labels={"service": "api"})
    )


async def seen_headers_backend(tcp_server: TcpServer, seen: list[dict[str, str]]) -> int:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    if line:
                        n, _, v = line.partition(":")
                        headers[n.strip().lower()] = v.strip()
                seen.append(headers)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return (await tcp_server(handle))[1]


async def get(proxy: Proxy) -> tuple[int, dict[str, str]]:
    reader, writer = await asyncio.open_connection(*proxy.outbound_addr)
    try:
        writer.write(f"GET / HTTP/1.1\r\nhost: {AUTHORITY}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if line:
                n, _, v = line.partition(":")
                headers[n.strip().lower()] = v.strip()
        await reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split(" ")[1]), headers
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def metric(proxy: Proxy, name: str, **labels: str) -> float:
    total = 0.0
    for line in proxy.metrics.registry.render().decode().splitlines():
        if line.startswith(name + "{"):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def client_proxy(
    start_proxy: StartProxy, trust: TrustMaterial, tmp_path: Path, addr: str
) -> Proxy:
    host, port = CLUSTER_IP.split(":")
    return await start_proxy(
        (host, int(port)),
        LINKERD2_PROXY_DESTINATION_SVC_ADDR=addr,
        LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS="127.0.0.0/8",
        **identity_env(trust, tmp_path, CLIENT),
    )


def profile() -> destination_pb2.DestinationProfile:
    return destination_pb2.DestinationProfile(
        fully_qualified_name=AUTHORITY.rsplit(":", 1)[0],
        retry_budget=destination_pb2.RetryBudget(
            retry_ratio=0.2, min_retries_per_second=10, ttl=Duration(seconds=10)
        ),
    )


async def test_discovered_identity_gets_mtls_with_transport_header(
    start_proxy: StartProxy,
    tcp_server: TcpServer,
    trust: TrustMaterial,
    tmp_path: Path,
    destination: tuple[Destination, str],
) -> None:
    servicer, addr = destination
    seen: list[dict[str, str]] = []
    backend_port = await seen_headers_backend(tcp_server, seen)
    server = await start_proxy(**identity_env(trust, tmp_path, SERVER))
    servicer.profiles[CLUSTER_IP] = profile()
    servicer.endpoints[AUTHORITY] = endpoint(backend_port, SERVER, server.inbound_addr.port)
    client = await client_proxy(start_proxy, trust, tmp_path, addr)

    for _ in range(3):
        status, _ = await get(client)
        assert status == 200

    assert [h.get("l5d-client-id") for h in seen] == [CLIENT] * 3
    assert metric(client, "response_total", tls="true", server_id=SERVER, status_code="200") == 3
    assert metric(server, "request_total", direction="inbound", tls="true", client_id=CLIENT) == 3
    # HTTP/1.1 between the proxies, one pooled connection reused for all three requests.
    assert metric(client, "tcp_open_total", peer="dst", server_id=SERVER) == 1


async def test_endpoint_with_the_wrong_identity_is_refused(
    start_proxy: StartProxy,
    tcp_server: TcpServer,
    trust: TrustMaterial,
    tmp_path: Path,
    destination: tuple[Destination, str],
) -> None:
    servicer, addr = destination
    seen: list[dict[str, str]] = []
    backend_port = await seen_headers_backend(tcp_server, seen)
    server = await start_proxy(**identity_env(trust, tmp_path, SERVER))
    servicer.profiles[CLUSTER_IP] = profile()
    servicer.endpoints[AUTHORITY] = endpoint(backend_port, OTHER, server.inbound_addr.port)
    client = await client_proxy(start_proxy, trust, tmp_path, addr)

    status, headers = await get(client)

    assert status == 502
    assert "l5d-proxy-error" in headers
    assert seen == []


async def _unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    context.set_trailing_metadata((("x-trailer", "t1"),))
    return b"echo:" + request


async def _bidi(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    async for message in requests:
        yield b"re:" + message


async def _many(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    for _ in range(int(request)):
        yield b"s" * 100_000


@pytest.fixture
async def grpc_backend() -> AsyncIterator[tuple[int, list[str]]]:
    """A real grpcio server; returns its port and the ``l5d-client-id`` of each call."""
    client_ids: list[str] = []

    def seen(context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        client_ids.append(dict(context.invocation_metadata() or ()).get("l5d-client-id", ""))

    async def unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        seen(context)
        return await _unary(request, context)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Echo",
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(unary),
                    "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
                    "Many": grpc.unary_stream_rpc_method_handler(_many),
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port, client_ids
    await server.stop(0)


async def grpc_calls(port: int) -> None:
    """Unary (with trailers), bidi and server-streaming calls through the client proxy."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        unary = channel.unary_unary("/test.Echo/Unary", None, None)
        for i in range(3):
            call = unary(b"m%d" % i, timeout=10)
            assert await call == b"echo:m%d" % i
            assert ("x-trailer", "t1") in tuple(await call.trailing_metadata())
        bidi = channel.stream_stream("/test.Echo/Bidi", None, None)(None, timeout=10)
        for i in range(20):
            await bidi.write(b"b%d" % i)
            assert await bidi.read() == b"re:b%d" % i
        await bidi.done_writing()
        assert await bidi.code() is grpc.StatusCode.OK
        total = 0
        async for message in channel.unary_stream("/test.Echo/Many", None, None)(b"30", timeout=10):
            total += len(message)
        assert total == 3_000_000  # several windows' worth: flow control turns over


async def test_grpc_to_a_discovered_meshed_endpoint_goes_over_mtls(
    start_proxy: StartProxy,
    trust: TrustMaterial,
    tmp_path: Path,
    destination: tuple[Destination, str],
    grpc_backend: tuple[int, list[str]],
) -> None:
    """The meshed gRPC path: HTTP/2 inside mTLS to the peer's inbound port, header first."""
    servicer, addr = destination
    backend_port, client_ids = grpc_backend
    server = await start_proxy(**identity_env(trust, tmp_path, SERVER))
    servicer.profiles[CLUSTER_IP] = profile()
    servicer.endpoints[AUTHORITY] = endpoint(backend_port, SERVER, server.inbound_addr.port)
    client = await client_proxy(start_proxy, trust, tmp_path, addr)

    await grpc_calls(client.outbound_addr.port)

    assert client_ids == [CLIENT] * 3
    backend_addr = f"127.0.0.1:{backend_port}"
    assert (
        metric(
            client,
            "response_total",
            direction="outbound",
            tls="true",
            server_id=SERVER,
            target_addr=backend_addr,
            grpc_status="0",
            classification="success",
        )
        == 5
    )
    assert metric(client, "request_total", direction="outbound", tls="no_identity") == 0
    assert metric(client, "tcp_open_total", peer="dst", server_id=SERVER) == 1
    assert (
        metric(
            server,
            "response_total",
            direction="inbound",
            tls="true",
            client_id=CLIENT,
            target_addr=backend_addr,
            grpc_status="0",
        )
        == 5
    )
    assert metric(server, "tcp_open_total", peer="src", tls="true", client_id=CLIENT) == 1


async def test_grpc_to_a_discovered_endpoint_with_the_wrong_identity_is_unavailable(
    start_proxy: StartProxy,
    trust: TrustMaterial,
    tmp_path: Path,
    destination: tuple[Destination, str],
    grpc_backend: tuple[int, list[str]],
) -> None:
    servicer, addr = destination
    backend_port, client_ids = grpc_backend
    server = await start_proxy(**identity_env(trust, tmp_path, SERVER))
    servicer.profiles[CLUSTER_IP] = profile()
    servicer.endpoints[AUTHORITY] = endpoint(backend_port, OTHER, server.inbound_addr.port)
    client = await client_proxy(start_proxy, trust, tmp_path, addr)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{client.outbound_addr.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary("/test.Echo/Unary", None, None)(b"x", timeout=10)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert client_ids == []
    assert metric(client, "response_total", direction="outbound", classification="failure") == 1
