"""Two real proxies on loopback with static identities: the bench's two-hop topology.

client → outbound proxy (fixed target + fixed identity) ==mTLS==> inbound proxy (static
identity) → backend. Real TLS 1.3 with certificates from a real ``gossamer_tls`` CA; the
assertions are on what the backend receives and on the proxies' Prometheus output.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from gossamer_api.transport_header import TransportHeader, encode_transport_header
from gossamer_common.metrics import Registry
from gossamer_proxy.app import Proxy
from gossamer_proxy.config import Endpoint, load_settings
from gossamer_proxy.local_identity import IdentityConfigError, identity_from_settings
from gossamer_proxy.mesh.transport import ALPN_PROTOCOL
from gossamer_proxy.pool import MAX_MESH_CONNECTS
from gossamer_tls import (
    Issuer,
    TrustMaterial,
    certificates_to_pem,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    private_key_to_pem,
)
from raw_h2 import until

StartProxy = Callable[..., Awaitable[Proxy]]


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a content-length body (the proxies' answers all have one)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split(" ")[1]), headers, body


CLIENT = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"
SERVER = "api.emojivoto.serviceaccount.identity.gossamer.cluster.local"
OTHER = "db.emojivoto.serviceaccount.identity.gossamer.cluster.local"

Backend = Callable[..., Awaitable[tuple[str, int]]]


@pytest.fixture(scope="module")
def trust() -> TrustMaterial:
    return generate_trust_anchor_and_issuer(
        trust_domain="cluster.local",
        control_plane_namespace="gossamer",
        now=dt.datetime.now(dt.UTC),
    )


def _anchors(trust: TrustMaterial) -> str:
    return certificates_to_pem([trust.trust_anchor.certificate]).decode()


def _identity_env(
    trust: TrustMaterial, tmp: Path, name: str, *, sign_as: str | None = None
) -> dict[str, str]:
    key = generate_private_key()
    issuer = Issuer(trust.issuer.certificate, trust.issuer.private_key)
    issued = issuer.sign_leaf(
        key.public_key(),
        sign_as or name,
        now=dt.datetime.now(dt.UTC),
        lifetime=dt.timedelta(hours=1),
        clock_skew=dt.timedelta(seconds=5),
    )
    chain = [x509.load_der_x509_certificate(issued.leaf_der)] + [
        x509.load_der_x509_certificate(der) for der in issued.intermediates_der
    ]
    cert_file = tmp / f"{name}.crt"
    key_file = tmp / f"{name}.key"
    cert_file.write_bytes(certificates_to_pem(chain))
    key_file.write_bytes(private_key_to_pem(key))
    return {
        "LINKERD2_PROXY_IDENTITY_LOCAL_NAME": name,
        "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": _anchors(trust),
        "GOSSAMER_PROXY_IDENTITY_CERT_FILE": str(cert_file),
        "GOSSAMER_PROXY_IDENTITY_KEY_FILE": str(key_file),
    }


async def _echo_backend(tcp_server: Backend, seen: list[dict[str, str]]) -> tuple[str, int]:
    """An HTTP/1.1 server that records request headers and answers 200 ``hello``."""

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

    return await tcp_server(handle)


async def _get(
    addr: tuple[str, int] | object, path: str = "/"
) -> tuple[int, dict[str, str], bytes]:
    host, port = addr  # type: ignore[misc]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nhost: api.test:80\r\n\r\n".encode())
        await writer.drain()
        return await asyncio.wait_for(read_response(reader), 10)
    finally:
        writer.close()


def _metric(proxy: Proxy, name: str, **labels: str) -> float:
    """Sum of the series of ``name`` whose labels include all of ``labels``."""
    total = 0.0
    for line in proxy.metrics.registry.render().decode().splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _two_hop(
    start_proxy: StartProxy,
    trust: TrustMaterial,
    tmp_path: Path,
    backend: tuple[str, int],
    *,
    expect: str = SERVER,
    inbound_env: dict[str, str] | None = None,
) -> tuple[Proxy, Proxy]:
    inbound = await start_proxy(
        **_identity_env(trust, tmp_path, SERVER),
        GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"{backend[0]}:{backend[1]}",
        **(inbound_env or {}),
    )
    outbound = await start_proxy(
        (inbound.inbound_addr.host, inbound.inbound_addr.port),
        **_identity_env(trust, tmp_path, CLIENT),
        GOSSAMER_PROXY_OUTBOUND_FIXED_IDENTITY=expect,
    )
    return inbound, outbound


async def test_mtls_two_hop_carries_identities(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    seen: list[dict[str, str]] = []
    backend = await _echo_backend(tcp_server, seen)
    inbound, outbound = await _two_hop(start_proxy, trust, tmp_path, backend)
    assert inbound.ready
    assert outbound.ready
    for _ in range(3):
        status, _, body = await _get(outbound.outbound_addr)
        assert (status, body) == (200, b"hello")
    assert [h.get("l5d-client-id") for h in seen] == [CLIENT] * 3
    assert _metric(inbound, "request_total", direction="inbound", tls="true", client_id=CLIENT) == 3
    assert (
        _metric(outbound, "request_total", direction="outbound", tls="true", server_id=SERVER) == 3
    )
    assert _metric(inbound, "inbound_http_authz_allow_total", tls="true", client_id=CLIENT) == 3
    assert _metric(inbound, "identity_cert_expiration_timestamp_seconds") > 0
    # Pooled: three requests, one mTLS connection between the proxies.
    assert _metric(outbound, "tcp_open_total", direction="outbound", peer="dst") == 1


async def test_client_id_header_from_the_app_is_replaced(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    seen: list[dict[str, str]] = []
    backend = await _echo_backend(tcp_server, seen)
    _inbound, outbound = await _two_hop(start_proxy, trust, tmp_path, backend)
    host, port = outbound.outbound_addr
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET / HTTP/1.1\r\nhost: a\r\nl5d-client-id: forged.example\r\n\r\n")
    status, _, _ = await asyncio.wait_for(read_response(reader), 10)
    writer.close()
    assert status == 200
    assert seen[0]["l5d-client-id"] == CLIENT


async def test_wrong_server_identity_is_refused(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    seen: list[dict[str, str]] = []
    backend = await _echo_backend(tcp_server, seen)
    # The outbound proxy expects OTHER, but the server's certificate says SERVER: its SNI
    # is not the server's name, so the server passes the TLS through to the backend, which
    # cannot speak TLS; either way the client gets a 502 and the backend no request.
    _, outbound = await _two_hop(start_proxy, trust, tmp_path, backend, expect=OTHER)
    status, headers, _ = await _get(outbound.outbound_addr)
    # 502 when the TLS exchange fails outright, 504 when the passed-through handshake just
    # never completes within the connect timeout (the backend does not speak TLS).
    assert status in (502, 504)
    assert "l5d-proxy-error" in headers
    assert not seen


async def test_server_presenting_another_identity_is_refused(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    """The SNI matches the server's local name, but its certificate is for someone else."""
    seen: list[dict[str, str]] = []
    await _echo_backend(tcp_server, seen)
    env = _identity_env(trust, tmp_path, SERVER, sign_as=OTHER)
    with pytest.raises(IdentityConfigError, match="static identity certificate rejected"):
        identity_from_settings(load_settings(env), Registry())
    assert not seen


async def test_transport_header_mode_reaches_the_named_port(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    seen: list[dict[str, str]] = []
    backend = await _echo_backend(tcp_server, seen)
    inbound = await start_proxy(**_identity_env(trust, tmp_path, SERVER))
    outbound = await start_proxy(
        backend,  # the app's address; the connection goes to the proxy port with a header
        **_identity_env(trust, tmp_path, CLIENT),
        GOSSAMER_PROXY_OUTBOUND_FIXED_IDENTITY=SERVER,
        GOSSAMER_PROXY_OUTBOUND_FIXED_OPAQUE_TRANSPORT_PORT=str(inbound.inbound_addr.port),
    )
    status, _, body = await _get(outbound.outbound_addr)
    assert (status, body) == (200, b"hello")
    assert seen[0]["l5d-client-id"] == CLIENT
    assert (
        _metric(
            inbound,
            "request_total",
            tls="true",
            client_id=CLIENT,
            target_port=str(backend[1]),
        )
        == 1
    )


async def test_direct_connection_without_transport_header_is_refused(
    start_proxy: StartProxy, trust: TrustMaterial, tmp_path: Path
) -> None:
    inbound = await start_proxy(**_identity_env(trust, tmp_path, SERVER))
    host, port = inbound.inbound_addr
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
    with contextlib.suppress(ConnectionResetError):  # a reset is equally a refusal
        assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_plaintext_client_is_served_and_labelled(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    seen: list[dict[str, str]] = []
    backend = await _echo_backend(tcp_server, seen)
    inbound = await start_proxy(
        **_identity_env(trust, tmp_path, SERVER),
        GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"{backend[0]}:{backend[1]}",
    )
    status, _, _ = await _get(inbound.inbound_addr)
    assert status == 200
    assert "l5d-client-id" not in seen[0]
    assert (
        _metric(
            inbound,
            "request_total",
            direction="inbound",
            tls="no_identity",
            no_tls_reason="no_tls_from_remote",
        )
        == 1
    )


async def test_default_deny_policy_answers_403(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    seen: list[dict[str, str]] = []
    backend = await _echo_backend(tcp_server, seen)
    inbound, outbound = await _two_hop(
        start_proxy,
        trust,
        tmp_path,
        backend,
        inbound_env={"LINKERD2_PROXY_INBOUND_DEFAULT_POLICY": "deny"},
    )
    status, _headers, _ = await _get(outbound.outbound_addr)
    assert status == 403
    assert not seen
    assert _metric(inbound, "inbound_http_authz_deny_total", srv_name="deny", client_id=CLIENT) == 1
    # The 403 does not cost the pooled mesh connection.
    status, _, _ = await _get(outbound.outbound_addr)
    assert status == 403
    assert _metric(outbound, "tcp_open_total", direction="outbound", peer="dst") == 1


async def test_authenticated_policy_admits_meshed_and_refuses_plaintext(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    seen: list[dict[str, str]] = []
    backend = await _echo_backend(tcp_server, seen)
    inbound, outbound = await _two_hop(
        start_proxy,
        trust,
        tmp_path,
        backend,
        inbound_env={"LINKERD2_PROXY_INBOUND_DEFAULT_POLICY": "all-authenticated"},
    )
    status, _, _ = await _get(outbound.outbound_addr)
    assert status == 200
    status, _, _ = await _get(inbound.inbound_addr)  # plaintext, straight to the inbound port
    assert status == 403
    assert len(seen) == 1


async def test_unauthorized_opaque_connection_is_refused(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"server speaks first\n")
        await writer.drain()
        writer.close()

    backend = await tcp_server(never)
    inbound = await start_proxy(
        **_identity_env(trust, tmp_path, SERVER),
        GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"{backend[0]}:{backend[1]}",
        LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION=str(backend[1]),
        LINKERD2_PROXY_INBOUND_DEFAULT_POLICY="all-authenticated",
        LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT="200ms",
    )
    host, port = inbound.inbound_addr
    reader, _writer = await asyncio.open_connection(host, port)
    assert await asyncio.wait_for(reader.read(), 10) == b""
    _writer.close()
    assert _metric(inbound, "inbound_tcp_authz_deny_total", srv_name="all-authenticated") == 1


async def test_opaque_two_hop_relays_bytes_over_mtls(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    backend = await tcp_server(echo)
    inbound = await start_proxy(**_identity_env(trust, tmp_path, SERVER))
    outbound = await start_proxy(
        backend,
        **_identity_env(trust, tmp_path, CLIENT),
        GOSSAMER_PROXY_OUTBOUND_FIXED_IDENTITY=SERVER,
        GOSSAMER_PROXY_OUTBOUND_FIXED_OPAQUE_TRANSPORT_PORT=str(inbound.inbound_addr.port),
        GOSSAMER_PROXY_OUTBOUND_PORTS_DISABLE_PROTOCOL_DETECTION=str(backend[1]),
        LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION=str(backend[1]),
    )
    host, port = outbound.outbound_addr
    reader, writer = await asyncio.open_connection(host, port)
    payload = bytes(range(256)) * 512
    writer.write(payload)
    # (No half-close: asyncio's TLS transports cannot carry one; see the report.)
    got = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
    writer.close()
    assert got == payload
    assert _metric(inbound, "inbound_tcp_authz_allow_total", client_id=CLIENT) == 1


SSL_EOF_WARNING = "has no effect when using ssl"


@pytest.mark.parametrize("size", [100, 1 << 20], ids=["with-the-header", "relayed"])
async def test_opaque_half_close_over_mtls_delivers_everything_then_closes(
    start_proxy: StartProxy,
    tcp_server: Backend,
    trust: TrustMaterial,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    size: int,
) -> None:
    """A client that sends and half-closes: over mTLS its EOF becomes the TLS close_notify,
    which closes the connection (TLS transports cannot stay half-open). Everything it sent
    still reaches the backend, followed by the EOF, and the client sees the connection end
    instead of waiting forever; no proxy returns True from eof_received over TLS."""
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def collect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until EOF
        if not received.done():
            received.set_result(data)
        writer.close()

    backend = await tcp_server(collect)
    inbound = await start_proxy(
        **_identity_env(trust, tmp_path, SERVER), GOSSAMER_PROXY_INBOUND_FORWARD_HOST="127.0.0.1"
    )
    outbound = await start_proxy(
        backend,
        **_identity_env(trust, tmp_path, CLIENT),
        GOSSAMER_PROXY_OUTBOUND_FIXED_IDENTITY=SERVER,
        GOSSAMER_PROXY_OUTBOUND_FIXED_OPAQUE_TRANSPORT_PORT=str(inbound.inbound_addr.port),
        GOSSAMER_PROXY_OUTBOUND_PORTS_DISABLE_PROTOCOL_DETECTION=str(backend[1]),
        LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION=str(backend[1]),
    )
    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[:size]
    host, port = outbound.outbound_addr
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(payload)
        writer.write_eof()
        got = await asyncio.wait_for(received, 10)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # the end reached the client
        writer.close()
    assert len(got) == len(payload)
    assert got == payload
    assert not [r for r in caplog.records if SSL_EOF_WARNING in r.getMessage()]


async def test_a_mesh_client_that_sends_and_closes_at_once_is_still_delivered(
    start_proxy: StartProxy,
    tcp_server: Backend,
    trust: TrustMaterial,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Transport header, payload and close_notify in one flight: the inbound proxy sees the
    client's EOF before it has connected upstream, and its TLS transport is closing by then.
    What the client sent must still reach the backend, followed by the EOF."""
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def collect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until EOF
        if not received.done():
            received.set_result(data)
        writer.close()

    backend = await tcp_server(collect)
    inbound = await start_proxy(
        **_identity_env(trust, tmp_path, SERVER), GOSSAMER_PROXY_INBOUND_FORWARD_HOST="127.0.0.1"
    )
    client = await start_proxy(**_identity_env(trust, tmp_path, CLIENT))  # for its certificate
    assert client.identity is not None
    context = client.identity.client_context((ALPN_PROTOCOL,))
    assert context is not None
    header = encode_transport_header(TransportHeader(port=backend[1]))
    payload = b"one message, then goodbye" * 40
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        _reader, writer = await asyncio.open_connection(
            *inbound.inbound_addr, ssl=context, server_hostname=SERVER
        )
        writer.write(header + payload)
        writer.close()  # close_notify right behind the data
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        assert await asyncio.wait_for(received, 10) == payload
    assert not [r for r in caplog.records if SSL_EOF_WARNING in r.getMessage()]


async def _grpc_echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    client_id = dict(context.invocation_metadata() or ()).get("l5d-client-id", "")
    return b"%s:%s" % (str(client_id).encode(), request)


async def _grpc_chat(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    async for message in requests:
        yield b"re:" + message


@pytest.fixture
async def grpc_backend() -> AsyncIterator[tuple[str, int]]:
    """A real grpcio server answering unary calls with the caller's ``l5d-client-id``."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Echo",
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(_grpc_echo),
                    "Bidi": grpc.stream_stream_rpc_method_handler(_grpc_chat),
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield "127.0.0.1", port
    await server.stop(0)


async def _grpc_calls(outbound: Proxy) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{outbound.outbound_addr.port}") as channel:
        unary = channel.unary_unary("/test.Echo/Unary", None, None)
        for i in range(3):
            assert await unary(b"m%d" % i, timeout=10) == f"{CLIENT}:m{i}".encode()
        bidi = channel.stream_stream("/test.Echo/Bidi", None, None)(None, timeout=10)
        for i in range(10):
            await bidi.write(b"b%d" % i)
            assert await bidi.read() == b"re:b%d" % i
        await bidi.done_writing()
        assert await bidi.code() is grpc.StatusCode.OK


async def test_grpc_two_hop_with_fixed_identity(
    start_proxy: StartProxy, grpc_backend: tuple[str, int], trust: TrustMaterial, tmp_path: Path
) -> None:
    """The bench's gRPC topology: HTTP/2 over the mTLS hop, identities in both proxies."""
    inbound, outbound = await _two_hop(start_proxy, trust, tmp_path, grpc_backend)
    await _grpc_calls(outbound)
    assert (
        _metric(
            outbound,
            "response_total",
            direction="outbound",
            tls="true",
            server_id=SERVER,
            grpc_status="0",
        )
        == 4
    )
    assert (
        _metric(inbound, "response_total", direction="inbound", tls="true", client_id=CLIENT) == 4
    )
    assert _metric(outbound, "tcp_open_total", direction="outbound", peer="dst") == 1


async def test_grpc_client_proxy_going_away_closes_the_mtls_hop_without_warnings(
    start_proxy: StartProxy,
    grpc_backend: tuple[str, int],
    trust: TrustMaterial,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client proxy's shutdown ends its HTTP/2 connection with close_notify: the inbound
    proxy takes that EOF as the end of the connection (TLS cannot stay half-open)."""
    inbound, outbound = await _two_hop(start_proxy, trust, tmp_path, grpc_backend)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        await _grpc_calls(outbound)
        assert inbound.in_flight() == 1
        assert await outbound.shutdown()
        for _ in range(500):  # bounded: the inbound side notices within a few loop turns
            if not inbound.in_flight():
                break
            await asyncio.sleep(0.01)
        assert inbound.in_flight() == 0
    assert not [r for r in caplog.records if SSL_EOF_WARNING in r.getMessage()]


async def test_grpc_two_hop_with_fixed_identity_and_transport_header(
    start_proxy: StartProxy, grpc_backend: tuple[str, int], trust: TrustMaterial, tmp_path: Path
) -> None:
    """HTTP/2 to the inbound port with ALPN and a transport header (written before h2's preface)."""
    inbound = await start_proxy(**_identity_env(trust, tmp_path, SERVER))
    outbound = await start_proxy(
        grpc_backend,
        **_identity_env(trust, tmp_path, CLIENT),
        GOSSAMER_PROXY_OUTBOUND_FIXED_IDENTITY=SERVER,
        GOSSAMER_PROXY_OUTBOUND_FIXED_OPAQUE_TRANSPORT_PORT=str(inbound.inbound_addr.port),
    )
    await _grpc_calls(outbound)
    target_port = str(grpc_backend[1])
    assert (
        _metric(
            outbound,
            "response_total",
            tls="true",
            server_id=SERVER,
            target_port=target_port,
            grpc_status="0",
        )
        == 4
    )
    assert (
        _metric(
            inbound,
            "response_total",
            tls="true",
            client_id=CLIENT,
            target_port=target_port,
            grpc_status="0",
        )
        == 4
    )


# -- a burst of new client connections toward one peer proxy -----------------------------------


async def _send_get(addr: tuple[str, int] | object) -> tuple[asyncio.StreamReader, Any]:
    host, port = addr  # type: ignore[misc]
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET / HTTP/1.1\r\nhost: api.test:80\r\n\r\n")
    await writer.drain()
    return reader, writer


async def test_a_burst_toward_one_peer_starts_only_a_few_handshakes_at_a_time(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    """12 new client connections at once: 4 mesh connects start, the others queue for them.

    The peer accepts TCP and stalls the handshake until told to let go; then it closes each
    connection, so every connect fails and hands its slot to the next queued request.
    """
    let_go = asyncio.Event()
    state = {"accepted": 0, "open": 0, "most_open": 0}

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state["accepted"] += 1
        state["open"] += 1
        state["most_open"] = max(state["most_open"], state["open"])
        try:
            await let_go.wait()
        finally:
            state["open"] -= 1
            writer.close()

    peer = await tcp_server(stall)
    outbound = await start_proxy(
        peer,
        **_identity_env(trust, tmp_path, CLIENT),
        GOSSAMER_PROXY_OUTBOUND_FIXED_IDENTITY=SERVER,
        LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT="30s",
    )
    endpoint = Endpoint(*peer)
    clients = [await _send_get(outbound.outbound_addr) for _ in range(12)]
    try:
        await until(
            lambda: (
                state["accepted"] == 12
                or (state["accepted"] == MAX_MESH_CONNECTS and outbound.pool.queued(endpoint) == 8)
            ),
            "every request to connect or queue",
        )
        assert state["accepted"] == MAX_MESH_CONNECTS  # the old code started 12 handshakes
        assert outbound.pool.connecting(endpoint) == MAX_MESH_CONNECTS
        let_go.set()
        statuses = [(await asyncio.wait_for(read_response(reader), 20))[0] for reader, _ in clients]
    finally:
        for _, writer in clients:
            writer.close()
    assert all(status >= 500 for status in statuses)  # the peer never finished a handshake
    assert state["most_open"] <= MAX_MESH_CONNECTS
    assert outbound.pool.connecting(endpoint) == 0
    assert outbound.pool.queued(endpoint) == 0


async def test_a_second_connection_to_the_peer_resumes_the_tls_session(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    """The ticket from the first mesh connection lets the next one skip the certificates; the
    inbound proxy still knows the client's identity from the resumed session."""
    seen: list[str | None] = []
    both_arrived = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                client_id = re.search(rb"l5d-client-id: ([^\r]+)", head)
                seen.append(client_id.group(1).decode() if client_id else None)
                if len(seen) == 3:
                    both_arrived.set()
                if len(seen) > 1:  # the second and third wait for each other
                    await both_arrived.wait()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    backend = await tcp_server(handle)
    inbound, outbound = await _two_hop(start_proxy, trust, tmp_path, backend)
    status, _, _ = await _get(outbound.outbound_addr)  # the first connection, and its ticket
    assert status == 200
    results = await asyncio.gather(_get(outbound.outbound_addr), _get(outbound.outbound_addr))
    assert [r[0] for r in results] == [200, 200]
    assert seen == [CLIENT, CLIENT, CLIENT]
    endpoint = Endpoint(inbound.inbound_addr.host, inbound.inbound_addr.port)
    pooled = [outbound.pool.acquire(endpoint), outbound.pool.acquire(endpoint)]
    reused = sorted(
        c.transport.get_extra_info("ssl_object").session_reused  # type: ignore[union-attr]
        for c in pooled
    )
    assert reused == [False, True]
    assert _metric(outbound, "tcp_open_total", direction="outbound", peer="dst") == 2
