"""``l5d-require-id`` is enforced, not just stripped (linkerd-wire.md §9 outbound step 9).

A request that names a required server identity goes out only over mesh mTLS to a server
whose verified identity is exactly that name; otherwise the outbound proxy answers 502
(gRPC: ``UNAVAILABLE``) and the endpoint receives nothing. Covered on every outbound path:
HTTP/1 and HTTP/2 (gRPC), with a fixed target and with discovery, plaintext and mTLS.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
import test_proxy_outbound_discovery_mtls as shared
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import destination_pb2
from gossamer_proxy.app import Proxy
from gossamer_tls import TrustMaterial
from test_proxy_outbound_discovery_mtls import (
    AUTHORITY,
    CLIENT,
    CLUSTER_IP,
    OTHER,
    SERVER,
    Destination,
    client_proxy,
    endpoint,
    identity_env,
    metric,
    profile,
    seen_headers_backend,
)

pytestmark = pytest.mark.timeout(60)

# The discovery tests' fixtures: a scripted Destination service, trust roots, a gRPC backend.
destination = shared.destination
trust = shared.trust
grpc_backend = shared.grpc_backend

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]


async def get(proxy: Proxy, *extra: tuple[str, str]) -> tuple[int, dict[str, str]]:
    """One HTTP/1.1 GET through ``proxy``'s outbound listener, with ``extra`` headers."""
    reader, writer = await asyncio.open_connection(*proxy.outbound_addr)
    try:
        head = f"GET / HTTP/1.1\r\nhost: {AUTHORITY}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in extra)
        writer.write(head.encode() + b"\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = raw.decode("latin-1").split("\r\n")
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


async def unary(proxy: Proxy, require_id: str | None) -> grpc.StatusCode:
    metadata = (("l5d-require-id", require_id),) if require_id is not None else None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy.outbound_addr.port}") as channel:
        call = channel.unary_unary("/test.Echo/Unary", None, None)
        try:
            await call(b"x", timeout=10, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def plaintext_endpoint(port: int) -> destination_pb2.Update:
    addr = destination_pb2.WeightedAddr(
        addr=tcp_address_to_proto("127.0.0.1", port), weight=10000, metric_labels={"pod": "p"}
    )
    return destination_pb2.Update(add=destination_pb2.WeightedAddrSet(addrs=[addr]))


# --- HTTP/1 ---------------------------------------------------------------------------------


async def test_http1_fixed_plaintext_target_fails_a_required_identity(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    seen: list[dict[str, str]] = []
    port = await seen_headers_backend(tcp_server, seen)
    proxy = await start_proxy(("127.0.0.1", port))
    status, headers = await get(proxy, ("l5d-require-id", SERVER))
    assert status == 502
    assert "l5d-require-id" in headers["l5d-proxy-error"]
    assert seen == []
    status, _ = await get(proxy)  # without the header the same target is fine
    assert status == 200
    status, _ = await get(proxy, ("l5d-require-id", " "))  # an empty value requires nothing
    assert status == 200
    assert len(seen) == 2
    assert all("l5d-require-id" not in headers for headers in seen)


async def test_http1_fixed_identity_target_enforces_the_exact_identity(
    start_proxy: StartProxy, tcp_server: TcpServer, trust: TrustMaterial, tmp_path: Path
) -> None:
    seen: list[dict[str, str]] = []
    port = await seen_headers_backend(tcp_server, seen)
    server = await start_proxy(
        **identity_env(trust, tmp_path, SERVER),
        GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"127.0.0.1:{port}",
    )
    client = await start_proxy(
        (server.inbound_addr.host, server.inbound_addr.port),
        **identity_env(trust, tmp_path, CLIENT),
        GOSSAMER_PROXY_OUTBOUND_FIXED_IDENTITY=SERVER,
    )
    status, _ = await get(client, ("l5d-require-id", SERVER))
    assert status == 200
    assert "l5d-require-id" not in seen[0]
    assert seen[0]["l5d-client-id"] == CLIENT
    status, headers = await get(client, ("l5d-require-id", OTHER))
    assert status == 502
    assert OTHER in headers["l5d-proxy-error"]
    assert len(seen) == 1
    status, _ = await get(client)
    assert status == 200
    assert len(seen) == 2


async def test_http1_discovered_endpoints_enforce_the_required_identity(
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

    assert (await get(client, ("l5d-require-id", SERVER)))[0] == 200
    assert (await get(client, ("l5d-require-id", OTHER)))[0] == 502
    assert len(seen) == 1
    assert "l5d-require-id" not in seen[0]
    assert metric(client, "response_total", server_id=SERVER, status_code="502") == 1
    # A refused request does not count against the endpoint: the next one goes through.
    assert (await get(client))[0] == 200


async def test_http1_discovered_plaintext_endpoint_fails_a_required_identity(
    start_proxy: StartProxy,
    tcp_server: TcpServer,
    trust: TrustMaterial,
    tmp_path: Path,
    destination: tuple[Destination, str],
) -> None:
    servicer, addr = destination
    seen: list[dict[str, str]] = []
    backend_port = await seen_headers_backend(tcp_server, seen)
    servicer.profiles[CLUSTER_IP] = profile()
    servicer.endpoints[AUTHORITY] = plaintext_endpoint(backend_port)
    client = await client_proxy(start_proxy, trust, tmp_path, addr)

    assert (await get(client, ("l5d-require-id", SERVER)))[0] == 502
    assert seen == []
    assert (await get(client))[0] == 200


# --- HTTP/2 (gRPC) --------------------------------------------------------------------------


async def test_grpc_fixed_targets_enforce_the_required_identity(
    start_proxy: StartProxy,
    trust: TrustMaterial,
    tmp_path: Path,
    grpc_backend: tuple[int, list[str]],
) -> None:
    backend_port, client_ids = grpc_backend
    plaintext = await start_proxy(("127.0.0.1", backend_port))
    assert await unary(plaintext, SERVER) is grpc.StatusCode.UNAVAILABLE
    assert client_ids == []
    assert await unary(plaintext, None) is grpc.StatusCode.OK
    assert client_ids == [""]
    assert await unary(plaintext, "") is grpc.StatusCode.OK  # an empty value requires nothing
    client_ids.clear()

    server = await start_proxy(
        **identity_env(trust, tmp_path, SERVER),
        GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"127.0.0.1:{backend_port}",
    )
    meshed = await start_proxy(
        (server.inbound_addr.host, server.inbound_addr.port),
        **identity_env(trust, tmp_path, CLIENT),
        GOSSAMER_PROXY_OUTBOUND_FIXED_IDENTITY=SERVER,
    )
    assert await unary(meshed, SERVER) is grpc.StatusCode.OK
    assert await unary(meshed, OTHER) is grpc.StatusCode.UNAVAILABLE
    assert client_ids == [CLIENT]
    assert await unary(meshed, None) is grpc.StatusCode.OK


async def test_grpc_discovered_endpoints_enforce_the_required_identity(
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
    servicer.endpoints[AUTHORITY] = endpoint(backend_port, SERVER, server.inbound_addr.port)
    client = await client_proxy(start_proxy, trust, tmp_path, addr)

    assert await unary(client, SERVER) is grpc.StatusCode.OK
    assert await unary(client, OTHER) is grpc.StatusCode.UNAVAILABLE
    assert client_ids == [CLIENT]
    assert await unary(client, None) is grpc.StatusCode.OK
    assert client_ids == [CLIENT, CLIENT]


async def test_grpc_discovered_plaintext_endpoint_fails_a_required_identity(
    start_proxy: StartProxy,
    trust: TrustMaterial,
    tmp_path: Path,
    destination: tuple[Destination, str],
    grpc_backend: tuple[int, list[str]],
) -> None:
    servicer, addr = destination
    backend_port, client_ids = grpc_backend
    servicer.profiles[CLUSTER_IP] = profile()
    servicer.endpoints[AUTHORITY] = plaintext_endpoint(backend_port)
    client = await client_proxy(start_proxy, trust, tmp_path, addr)

    assert await unary(client, SERVER) is grpc.StatusCode.UNAVAILABLE
    assert client_ids == []
    assert await unary(client, None) is grpc.StatusCode.OK
