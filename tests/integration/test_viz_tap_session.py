"""`gossamer viz tap`'s fan-out against two real proxies over real mTLS, on loopback.

No Kubernetes: the targets are given directly. The state directory is laid out as local
mode's (``control-plane/identity/issuer`` and ``ca-bundle.crt``), so the CLI signs its tap
certificate exactly as it does against the local mesh. Each proxy listens on its own
loopback address with the same control port, as pods do.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from gossamer_cli.viz.tap_client import TapSession
from gossamer_cli.viz.tap_identity import local_tap_credentials, tap_identity
from gossamer_cli.viz.tap_query import TapFilters, TapTarget, observe_request
from gossamer_cli.viz.tap_render import render_line
from gossamer_proxy.app import Proxy
from gossamer_proxy.config import load_settings
from gossamer_tls import (
    Issuer,
    TrustMaterial,
    certificates_to_pem,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    private_key_to_pem,
)

pytestmark = pytest.mark.timeout(120)

TAP = tap_identity("gossamer", "cluster.local")


def _identity(ns: str, account: str) -> str:
    return f"{account}.{ns}.serviceaccount.identity.gossamer.cluster.local"


def _state_dir(tmp: Path) -> tuple[Path, TrustMaterial]:
    trust = generate_trust_anchor_and_issuer(
        trust_domain="cluster.local",
        control_plane_namespace="gossamer",
        now=dt.datetime.now(dt.UTC),
    )
    issuer = tmp / "control-plane" / "identity" / "issuer"
    issuer.mkdir(parents=True)
    (issuer / "crt.pem").write_bytes(certificates_to_pem([trust.issuer.certificate]))
    (issuer / "key.pem").write_bytes(private_key_to_pem(trust.issuer.private_key))
    anchors = certificates_to_pem([trust.trust_anchor.certificate])
    (tmp / "control-plane" / "identity" / "ca-bundle.crt").write_bytes(anchors)
    return tmp, trust


def _proxy_env(trust: TrustMaterial, tmp: Path, name: str, control: str) -> dict[str, str]:
    key = generate_private_key()
    issued = Issuer(trust.issuer.certificate, trust.issuer.private_key).sign_leaf(
        key.public_key(), name, now=dt.datetime.now(dt.UTC), lifetime=dt.timedelta(hours=1)
    )
    chain = [x509.load_der_x509_certificate(issued.leaf_der)] + [
        x509.load_der_x509_certificate(der) for der in issued.intermediates_der
    ]
    cert, key_file = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert.write_bytes(certificates_to_pem(chain))
    key_file.write_bytes(private_key_to_pem(key))
    return {
        "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS": "127.0.0.1:0",
        "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "127.0.0.1:0",
        "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "127.0.0.1:0",
        "LINKERD2_PROXY_IDENTITY_LOCAL_NAME": name,
        "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": certificates_to_pem(
            [trust.trust_anchor.certificate]
        ).decode(),
        "GOSSAMER_PROXY_IDENTITY_CERT_FILE": str(cert),
        "GOSSAMER_PROXY_IDENTITY_KEY_FILE": str(key_file),
        "LINKERD2_PROXY_TAP_SVC_NAME": TAP,
        "LINKERD2_PROXY_CONTROL_LISTEN_ADDR": control,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _backend() -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def test_tap_session_merges_two_proxies_and_checks_their_identities(tmp_path: Path) -> None:
    state, trust = _state_dir(tmp_path)
    port = _free_port()
    server, backend_port = await _backend()
    proxies: list[Proxy] = []
    try:
        for n, account in ((2, "web"), (3, "web")):
            env = _proxy_env(trust, tmp_path, _identity("demo", account), f"127.0.0.{n}:{port}")
            env["GOSSAMER_PROXY_OUTBOUND_FIXED_TARGET"] = f"127.0.0.1:{backend_port}"
            proxy = Proxy(load_settings(env), process_metrics=False)
            await proxy.start()
            proxies.append(proxy)
        targets = [
            TapTarget("demo", "web-a", "127.0.0.2", _identity("demo", "web")),
            TapTarget("demo", "web-b", "127.0.0.3", _identity("demo", "web")),
            # A proxy that cannot prove the identity expected of it is never tapped.
            TapTarget("demo", "imposter", "127.0.0.3", _identity("demo", "api")),
        ]
        credentials = local_tap_credentials(state, TAP)
        request = observe_request(TapFilters(path="/tapped"))
        # 30 rps over 3 pods: each Observe call may take 10 requests, then the next second's.
        session = TapSession(targets, request, credentials, port=port, max_rps=30)
        assert session.request.limit == 10
        lines: list[str] = []

        async def consume() -> None:
            async for _, event in session.events():
                line = render_line(event)
                assert line is not None
                lines.append(line)
                if sum(x.startswith("end ") for x in lines) == 4:
                    return  # leaving the iteration stops every stream

        consumer = asyncio.ensure_future(consume())
        async with asyncio.timeout(20):
            while any(p.taps is None or len(p.taps.active) < 1 for p in proxies):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            async with httpx.AsyncClient() as client:
                for proxy in proxies:
                    base = f"http://127.0.0.1:{proxy.outbound_addr.port}"
                    for path in ("/other", "/tapped/1", "/tapped/2"):
                        assert (await client.get(base + path)).status_code == 200
            await consumer
            # The session's streams are gone: so are the proxies' taps, and their observers.
            while any(p.taps is not None and p.taps.active for p in proxies):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert all(ctx.observers is None for p in proxies for ctx in p.contexts)
    finally:
        for proxy in proxies:
            await proxy.shutdown()
        server.close()
    reqs = [line for line in lines if line.startswith("req ")]
    assert len(reqs) == 4
    assert all(":path=/tapped/" in line and "proxy=out" in line for line in reqs)
    assert sum(line.startswith("end ") for line in lines) == 4
    assert [pod for pod, _ in session.errors] == ["demo/imposter"]
