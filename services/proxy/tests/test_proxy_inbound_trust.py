"""The inbound trust boundary, with real TLS against the real proxy on loopback.

A client that completes TLS to the inbound port with the proxy's SNI and ALPN
``transport.l5d.io/v1`` gets to name the target port in a transport header. Linkerd only
serves such connections for a mutually authenticated client (a certificate from the mesh
trust roots), and never forwards to the proxy's own listeners (the admin server trusts
loopback peers with ``/shutdown``). Each test here sends the attacker's bytes and checks
what actually happened: no byte from the target, no shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from gossamer_api.transport_header import (
    ALPN_PROTOCOL,
    SessionProtocol,
    TransportHeader,
    encode_transport_header,
)
from gossamer_proxy.app import Proxy
from gossamer_tls import TrustMaterial
from mesh_pki import anchors_pem, issue

pytestmark = pytest.mark.timeout(60)

StartProxy = Callable[..., Awaitable[Proxy]]
Backend = Callable[..., Awaitable[tuple[str, int]]]

SERVER = "api.emojivoto.serviceaccount.identity.gossamer.cluster.local"
CLIENT = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"
SECRET = b"localhost-only secret\n"


def _server_env(trust: TrustMaterial, tmp: Path) -> dict[str, str]:
    cert_file, key_file = issue(trust, tmp, SERVER)
    return {
        "LINKERD2_PROXY_IDENTITY_LOCAL_NAME": SERVER,
        "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": anchors_pem(trust),
        "GOSSAMER_PROXY_IDENTITY_CERT_FILE": str(cert_file),
        "GOSSAMER_PROXY_IDENTITY_KEY_FILE": str(key_file),
        "LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED": "true",
        "LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT": "2s",
    }


def _client_context(trust: TrustMaterial, client_cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    """What the attacker (or a peer proxy) uses: the mesh roots, SNI and ALPN of a peer."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=anchors_pem(trust))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols([ALPN_PROTOCOL])
    if client_cert is not None:
        context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
    return context


async def _secret_service(tcp_server: Backend) -> tuple[str, int]:
    """A service bound to 127.0.0.1 only: it answers anyone who reaches it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SECRET)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    return await tcp_server(handle)


async def _send_with_header(
    proxy: Proxy,
    context: ssl.SSLContext,
    port: int,
    payload: bytes,
    session: SessionProtocol | None = None,
) -> bytes:
    """TLS to the inbound port, a transport header naming ``port``, then ``payload``.

    Returns everything the proxy sent back before closing (empty: refused).
    """
    host, inbound_port = proxy.inbound_addr
    reader, writer = await asyncio.open_connection(
        host, inbound_port, ssl=context, server_hostname=SERVER
    )
    ssl_object = writer.get_extra_info("ssl_object")
    assert ssl_object.selected_alpn_protocol() == ALPN_PROTOCOL
    header = TransportHeader(port=port, name="", session_protocol=session)
    writer.write(encode_transport_header(header) + payload)
    got = b""
    try:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            got = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    return got


async def test_transport_header_without_client_certificate_is_refused(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    """The reported attack: no client certificate, a header naming a localhost-only port."""
    secret = await _secret_service(tcp_server)
    proxy = await start_proxy(**_server_env(trust, tmp_path))
    got = await _send_with_header(proxy, _client_context(trust, None), secret[1], b"hi\n")
    assert SECRET not in got
    assert got == b""


async def test_transport_header_without_client_certificate_cannot_shut_down(
    start_proxy: StartProxy, trust: TrustMaterial, tmp_path: Path
) -> None:
    proxy = await start_proxy(**_server_env(trust, tmp_path))
    request = b"POST /shutdown HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
    got = await _send_with_header(proxy, _client_context(trust, None), proxy.admin_port, request)
    assert got == b""
    assert not proxy.shutdown_control.requested


@pytest.mark.parametrize("session", [None, SessionProtocol.HTTP1])
async def test_authenticated_header_naming_the_admin_port_is_refused(
    start_proxy: StartProxy,
    trust: TrustMaterial,
    tmp_path: Path,
    session: SessionProtocol | None,
) -> None:
    """Even a meshed client cannot make the proxy forward to itself (admin trusts loopback)."""
    proxy = await start_proxy(**_server_env(trust, tmp_path))
    context = _client_context(trust, issue(trust, tmp_path, CLIENT))
    request = b"POST /shutdown HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
    got = await _send_with_header(proxy, context, proxy.admin_port, request, session)
    assert b"shutdown" not in got
    assert not proxy.shutdown_control.requested


async def test_authenticated_header_naming_an_outbound_port_is_refused(
    start_proxy: StartProxy, trust: TrustMaterial, tmp_path: Path
) -> None:
    proxy = await start_proxy(**_server_env(trust, tmp_path))
    context = _client_context(trust, issue(trust, tmp_path, CLIENT))
    got = await _send_with_header(
        proxy, context, proxy.outbound_addr.port, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
    )
    assert got == b""


async def test_authenticated_header_reaches_the_named_port_on_the_local_address(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    """The legitimate path: the client reached the proxy on loopback, so the target is too."""
    service = await _secret_service(tcp_server)
    proxy = await start_proxy(**_server_env(trust, tmp_path))
    context = _client_context(trust, issue(trust, tmp_path, CLIENT))
    got = await _send_with_header(proxy, context, service[1], b"hi\n")
    assert got == SECRET


async def test_authenticated_header_to_an_address_outside_the_pod_ips_is_refused(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    """With LINKERD2_PROXY_INBOUND_IPS set, only the pod's own addresses are served."""
    service = await _secret_service(tcp_server)
    proxy = await start_proxy(**_server_env(trust, tmp_path), LINKERD2_PROXY_INBOUND_IPS="10.9.8.7")
    context = _client_context(trust, issue(trust, tmp_path, CLIENT))
    got = await _send_with_header(proxy, context, service[1], b"hi\n")
    assert got == b""
