"""Idle mesh (mTLS, proxy-to-proxy) connections outlive the app-facing pool idle timeout.

The pure part runs on fakes with time passed in; the end-to-end part runs two real proxies
with real TLS 1.3 on loopback and checks, through the proxies' own TCP metrics, that a lull
longer than the 3 s pool idle timeout costs no new mTLS handshake, while the plaintext
connection to the app is still closed on the short timeout.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from gossamer_proxy.app import Proxy
from gossamer_proxy.config import Endpoint
from gossamer_proxy.pool import MESH_IDLE_TIMEOUT, Pool
from gossamer_tls import (
    Issuer,
    TrustMaterial,
    certificates_to_pem,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    private_key_to_pem,
)

EP = Endpoint("10.0.0.2", 4143)
CLIENT = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"
SERVER = "api.emojivoto.serviceaccount.identity.gossamer.cluster.local"

StartProxy = Callable[..., Awaitable[Proxy]]
Backend = Callable[..., Awaitable[tuple[str, int]]]


@dataclass(eq=False)
class FakeConn:
    endpoint: Endpoint = EP
    idle_since: float = 0.0
    meshed: bool = False
    closed: bool = False

    def is_usable(self) -> bool:
        return not self.closed

    def close(self) -> None:
        self.closed = True


def test_meshed_connections_survive_the_short_idle_timeout() -> None:
    pool = Pool(idle_timeout=3.0, max_idle_per_endpoint=10)
    app, mesh = FakeConn(), FakeConn(meshed=True)
    pool.release(app, now=0.0)
    pool.release(mesh, now=0.0)

    assert pool.sweep(now=10.0) == 1
    assert app.closed
    assert not mesh.closed
    assert pool.acquire(EP) is mesh


def test_meshed_connections_are_closed_after_the_mesh_idle_timeout() -> None:
    pool = Pool(idle_timeout=3.0, max_idle_per_endpoint=10)
    mesh = FakeConn(meshed=True)
    pool.release(mesh, now=0.0)

    assert pool.sweep(now=MESH_IDLE_TIMEOUT - 1.0) == 0
    assert pool.sweep(now=MESH_IDLE_TIMEOUT + 1.0) == 1
    assert mesh.closed
    assert pool.idle_count() == 0


def test_a_longer_configured_idle_timeout_also_applies_to_mesh_connections() -> None:
    pool = Pool(idle_timeout=120.0, max_idle_per_endpoint=10, mesh_idle_timeout=60.0)
    mesh = FakeConn(meshed=True)
    pool.release(mesh, now=0.0)

    assert pool.sweep(now=90.0) == 0
    assert not mesh.closed
    assert pool.mesh_idle_timeout == 120.0


# -- two real proxies ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trust() -> TrustMaterial:
    return generate_trust_anchor_and_issuer(
        trust_domain="cluster.local",
        control_plane_namespace="gossamer",
        now=dt.datetime.now(dt.UTC),
    )


def _identity_env(trust: TrustMaterial, tmp: Path, name: str) -> dict[str, str]:
    key = generate_private_key()
    issuer = Issuer(trust.issuer.certificate, trust.issuer.private_key)
    issued = issuer.sign_leaf(
        key.public_key(),
        name,
        now=dt.datetime.now(dt.UTC),
        lifetime=dt.timedelta(hours=1),
        clock_skew=dt.timedelta(seconds=5),
    )
    chain = [x509.load_der_x509_certificate(issued.leaf_der)] + [
        x509.load_der_x509_certificate(der) for der in issued.intermediates_der
    ]
    cert_file, key_file = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_file.write_bytes(certificates_to_pem(chain))
    key_file.write_bytes(private_key_to_pem(key))
    return {
        "LINKERD2_PROXY_IDENTITY_LOCAL_NAME": name,
        "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": certificates_to_pem(
            [trust.trust_anchor.certificate]
        ).decode(),
        "GOSSAMER_PROXY_IDENTITY_CERT_FILE": str(cert_file),
        "GOSSAMER_PROXY_IDENTITY_KEY_FILE": str(key_file),
    }


async def _hello_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _get(proxy: Proxy) -> bytes:
    """One request on a fresh client connection; returns the whole response."""
    addr = proxy.outbound_addr
    reader, writer = await asyncio.open_connection(addr[0], addr[1])
    try:
        writer.write(b"GET / HTTP/1.1\r\nhost: api.test:80\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        return head + await asyncio.wait_for(reader.readexactly(5), 10)
    finally:
        writer.close()


def _opened(proxy: Proxy, direction: str) -> float:
    total = 0.0
    for line in proxy.metrics.registry.render().decode().splitlines():
        if line.startswith("tcp_open_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            if labels.get("direction") == direction and labels.get("peer") == "dst":
                total += float(line.rsplit(" ", 1)[1])
    return total


async def test_a_lull_costs_no_new_mtls_handshake(
    start_proxy: StartProxy, tcp_server: Backend, trust: TrustMaterial, tmp_path: Path
) -> None:
    backend = await tcp_server(_hello_backend)
    inbound = await start_proxy(
        **_identity_env(trust, tmp_path, SERVER),
        GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"{backend[0]}:{backend[1]}",
    )
    outbound = await start_proxy(
        (inbound.inbound_addr.host, inbound.inbound_addr.port),
        **_identity_env(trust, tmp_path, CLIENT),
        GOSSAMER_PROXY_OUTBOUND_FIXED_IDENTITY=SERVER,
    )
    assert (await _get(outbound)).endswith(b"\r\n\r\nhello")
    assert outbound.pool.idle_count() == 1
    assert inbound.pool.idle_count() == 1

    # Ten seconds of quiet, well past the 3 s pool idle timeout (time is passed in).
    later = asyncio.get_running_loop().time() + 10.0
    assert outbound.pool.sweep(later) == 0  # the mTLS connection to the peer proxy stays
    assert inbound.pool.sweep(later) == 1  # the plaintext one to the app does not

    assert (await _get(outbound)).endswith(b"\r\n\r\nhello")
    assert _opened(outbound, "outbound") == 1  # reused: still one mTLS connection
    assert _opened(inbound, "inbound") == 2  # the app connection was opened again

    much_later = asyncio.get_running_loop().time() + MESH_IDLE_TIMEOUT + 1.0
    assert outbound.pool.sweep(much_later) == 1
    assert outbound.pool.idle_count() == 0
