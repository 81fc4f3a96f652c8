"""Identity client against a real in-process gRPC Identity server, and mTLS between proxies.

The Identity servicer here is a peer the test drives (it signs with a real CA from
``gossamer_tls`` and can be told to fail); the client under test is the real
:class:`IdentityClient`, over real gRPC on 127.0.0.1 and real TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from gossamer_api.proxy import identity_pb2, identity_pb2_grpc
from gossamer_common.metrics import Registry
from gossamer_proxy.mesh.identity import (
    IdentityClient,
    IdentityConfig,
    IdentityConfigError,
    IdentityMetrics,
)
from gossamer_proxy.mesh.schedule import CertState
from gossamer_proxy.mesh.settings import load_mesh_settings
from gossamer_proxy.mesh.tls_contexts import Credentials, client_context, peer_identity
from gossamer_tls import (
    CsrError,
    Issuer,
    TrustMaterial,
    certificates_to_pem,
    check_csr,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    load_csr,
    private_key_to_pem,
)

WEB = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"
API = "api.emojivoto.serviceaccount.identity.gossamer.cluster.local"
IDENTITY_SVC = "gossamer-identity.gossamer.serviceaccount.identity.gossamer.cluster.local"
TOKEN = b"projected-token-1"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class FakeIdentity(identity_pb2_grpc.IdentityServicer):
    """Checks the token and CSR like the real service, then signs with ``issuer``."""

    issuer: Issuer
    lifetime: dt.timedelta = dt.timedelta(hours=24)
    fail_with: grpc.StatusCode | None = None
    sign_as: str | None = None
    drop_valid_until: bool = False
    tokens: list[bytes] = field(default_factory=list)
    issued: int = 0

    async def Certify(
        self, request: identity_pb2.CertifyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> identity_pb2.CertifyResponse:
        self.tokens.append(request.token)
        if self.fail_with is not None:
            await context.abort(self.fail_with, "identity service is having a bad day")
        if request.token != TOKEN and not request.token.startswith(b"projected-token"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad token")
        try:
            checked = check_csr(
                load_csr(request.certificate_signing_request, allow_pem=False), request.identity
            )
        except CsrError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        issued = self.issuer.sign_leaf(
            checked.public_key,
            self.sign_as or request.identity,
            now=now(),
            lifetime=self.lifetime,
            clock_skew=dt.timedelta(seconds=1),
        )
        self.issued += 1
        response = identity_pb2.CertifyResponse(
            leaf_certificate=issued.leaf_der,
            intermediate_certificates=list(issued.intermediates_der),
        )
        if not self.drop_valid_until:
            stamp = Timestamp()
            stamp.FromDatetime(issued.valid_until)
            response.valid_until.CopyFrom(stamp)
        return response


@dataclass
class IdentityServer:
    servicer: FakeIdentity
    server: grpc.aio.Server
    addr: str


@pytest.fixture(scope="module")
def trust() -> TrustMaterial:
    return generate_trust_anchor_and_issuer(
        trust_domain="cluster.local", control_plane_namespace="gossamer", now=now()
    )


@pytest.fixture
def anchors_pem(trust: TrustMaterial) -> str:
    return certificates_to_pem([trust.trust_anchor.certificate]).decode()


@pytest.fixture
def issuer(trust: TrustMaterial) -> Issuer:
    return Issuer(trust.issuer.certificate, trust.issuer.private_key)


async def start_server(
    servicer: FakeIdentity, credentials: grpc.ServerCredentials | None = None
) -> IdentityServer:
    server = grpc.aio.server()
    identity_pb2_grpc.add_IdentityServicer_to_server(servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return IdentityServer(servicer, server, f"127.0.0.1:{port}")


@pytest.fixture
async def identity_server(issuer: Issuer) -> AsyncIterator[IdentityServer]:
    running = await start_server(FakeIdentity(issuer))
    yield running
    await running.server.stop(None)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_bytes(TOKEN)
    return path


def make_client(
    addr: str, anchors_pem: str, token_file: Path, name: str = WEB, **kwargs: object
) -> IdentityClient:
    config = IdentityConfig(
        local_name=name,
        trust_anchors_pem=anchors_pem,
        token_file=token_file,
        svc_addr=addr,
        min_refresh=0.05,
        retry_max=0.2,
        **kwargs,  # type: ignore[arg-type]
    )
    return IdentityClient(config, metrics=IdentityMetrics(Registry()))


async def test_certify_installs_a_verified_certificate_and_becomes_ready(
    identity_server: IdentityServer, anchors_pem: str, token_file: Path
) -> None:
    registry = Registry()
    client = IdentityClient(
        IdentityConfig(WEB, anchors_pem, token_file, identity_server.addr),
        metrics=IdentityMetrics(registry),
    )
    assert not client.ready.is_set()
    assert client.state() is CertState.NONE
    delay = await client.refresh()
    assert client.ready.is_set()
    assert client.state() is CertState.VALID
    assert client.credentials is not None
    assert client.credentials.identity == WEB
    # 70% of a ~24h certificate, clamped to the 24h maximum refresh.
    assert 0.69 * 86400 < delay < 0.71 * 86400
    text = registry.render().decode()
    assert "identity_cert_refresh_count 1" in text
    assert "identity_cert_expiration_timestamp_seconds " in text


async def test_token_file_is_read_for_every_call(
    identity_server: IdentityServer, anchors_pem: str, token_file: Path
) -> None:
    client = make_client(identity_server.addr, anchors_pem, token_file)
    await client.refresh()
    await asyncio.to_thread(token_file.write_bytes, b"projected-token-2")
    await client.refresh()
    assert identity_server.servicer.tokens == [TOKEN, b"projected-token-2"]


async def test_renews_before_expiry_with_a_new_certificate(
    identity_server: IdentityServer, anchors_pem: str, token_file: Path
) -> None:
    identity_server.servicer.lifetime = dt.timedelta(seconds=2)
    client = make_client(identity_server.addr, anchors_pem, token_file)
    task = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.ready.wait(), 10)
        assert client.credentials is not None
        first = client.credentials.leaf_der
        for _ in range(400):  # bounded: at most 20 s
            if identity_server.servicer.issued >= 3:
                break
            await asyncio.sleep(0.05)
        assert identity_server.servicer.issued >= 3
        assert client.credentials.leaf_der != first
        assert client.state() is CertState.VALID
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_keeps_certificate_while_identity_service_is_down(
    identity_server: IdentityServer, anchors_pem: str, token_file: Path
) -> None:
    client = make_client(identity_server.addr, anchors_pem, token_file)
    await client.refresh()
    installed = client.credentials
    identity_server.servicer.fail_with = grpc.StatusCode.UNAVAILABLE
    delays = [await client.refresh() for _ in range(3)]
    assert client.credentials is installed
    assert client.ready.is_set()
    assert client.last_error is not None
    assert client.last_error.startswith("UNAVAILABLE")
    assert delays[0] < delays[2] <= 0.2 * 1.2 + 1e-9  # backoff grows, bounded by retry_max
    await identity_server.server.stop(None)  # now the service is gone entirely
    await client.refresh()
    assert client.credentials is installed
    assert client.state() is CertState.VALID
    # Once it is back, the next attempt renews.
    back = await start_server(FakeIdentity(identity_server.servicer.issuer))
    try:
        client.config = IdentityConfig(WEB, anchors_pem, token_file, back.addr, min_refresh=0.05)
        await client.refresh()
        assert client.credentials is not installed
        assert client.last_error is None
    finally:
        await back.server.stop(None)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"sign_as": API}, "not valid for"),
        ({"drop_valid_until": True}, "no valid_until"),
        ({"fail_with": grpc.StatusCode.FAILED_PRECONDITION}, "FAILED_PRECONDITION"),
    ],
)
async def test_bad_responses_are_rejected_and_not_ready(
    identity_server: IdentityServer,
    anchors_pem: str,
    token_file: Path,
    change: dict[str, object],
    error: str,
) -> None:
    for key, value in change.items():
        setattr(identity_server.servicer, key, value)
    client = make_client(identity_server.addr, anchors_pem, token_file)
    await client.refresh()
    assert client.credentials is None
    assert not client.ready.is_set()
    assert client.last_error is not None
    assert error in client.last_error


async def test_certificate_from_another_ca_is_rejected(
    identity_server: IdentityServer, token_file: Path
) -> None:
    other = generate_trust_anchor_and_issuer(
        trust_domain="cluster.local", control_plane_namespace="gossamer", now=now()
    )
    other_pem = certificates_to_pem([other.trust_anchor.certificate]).decode()
    client = make_client(identity_server.addr, other_pem, token_file)
    await client.refresh()
    assert client.credentials is None
    assert client.last_error is not None
    assert "does not chain" in client.last_error


async def test_missing_token_file_is_retried_not_fatal(
    identity_server: IdentityServer, anchors_pem: str, tmp_path: Path
) -> None:
    client = make_client(identity_server.addr, anchors_pem, tmp_path / "missing")
    delay = await client.refresh()
    assert delay > 0
    assert client.last_error is not None
    assert "missing" in client.last_error


def test_config_errors_name_the_variables(anchors_pem: str, tmp_path: Path) -> None:
    settings = load_mesh_settings({"LINKERD2_PROXY_IDENTITY_LOCAL_NAME": WEB})
    with pytest.raises(IdentityConfigError, match="LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"):
        IdentityConfig.from_settings(settings)
    bad = IdentityConfig(WEB, "not pem", tmp_path / "t", "127.0.0.1:1")
    with pytest.raises(IdentityConfigError, match="must hold PEM"):
        IdentityClient(bad)
    broken = IdentityConfig(WEB, anchors_pem.replace("M", "*", 3), tmp_path / "t", "x:1")
    with pytest.raises(IdentityConfigError, match="TRUST_ANCHORS"):
        IdentityClient(broken)
    good = load_mesh_settings(
        {
            "LINKERD2_PROXY_IDENTITY_LOCAL_NAME": WEB,
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": anchors_pem,
            "LINKERD2_PROXY_IDENTITY_SVC_ADDR": "identity.gossamer.svc.cluster.local.:8080",
            "LINKERD2_PROXY_IDENTITY_MIN_REFRESH": "1s",
        }
    )
    config = IdentityConfig.from_settings(good)
    assert config.min_refresh == 1.0
    assert config.svc_name is None


async def test_identity_service_over_tls_checks_its_name(
    issuer: Issuer, anchors_pem: str, token_file: Path
) -> None:
    key = generate_private_key()
    issued = issuer.sign_leaf(key.public_key(), IDENTITY_SVC, now=now())
    chain = certificates_to_pem([issued.certificate, issuer.certificate])
    credentials = grpc.ssl_server_credentials([(private_key_to_pem(key), chain)])
    running = await start_server(FakeIdentity(issuer), credentials)
    try:
        good = make_client(running.addr, anchors_pem, token_file, svc_name=IDENTITY_SVC)
        await good.refresh()
        assert good.credentials is not None, good.last_error
        # Renewal over TLS presents the current certificate as a client certificate.
        await good.refresh()
        assert running.servicer.issued == 2
        wrong = make_client(running.addr, anchors_pem, token_file, svc_name=API)
        await wrong.refresh()
        assert wrong.credentials is None
        assert wrong.last_error is not None
        assert wrong.last_error.startswith("UNAVAILABLE")
    finally:
        await running.server.stop(None)


# --- mTLS between two proxies ----------------------------------------------------------------


async def certified(addr: str, anchors_pem: str, token_file: Path, name: str) -> IdentityClient:
    client = make_client(addr, anchors_pem, token_file, name=name)
    await client.refresh()
    assert client.credentials is not None, client.last_error
    return client


async def handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str
) -> tuple[str | None, str | None, str | None]:
    """Connect over loopback; returns (client id seen by server, server id seen by client, ALPN)."""
    seen: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        seen.set_result(peer_identity(ssl_object))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname=server_hostname
            ),
            10,
        )
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            assert ssl_object.version() == "TLSv1.3"
            assert await reader.read() == b"ok"
            return (
                await asyncio.wait_for(seen, 5),
                peer_identity(ssl_object),
                ssl_object.selected_alpn_protocol(),
            )
        finally:
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_mtls_between_meshed_proxies_checks_identities(
    identity_server: IdentityServer, anchors_pem: str, token_file: Path
) -> None:
    web = await certified(identity_server.addr, anchors_pem, token_file, WEB)
    api = await certified(identity_server.addr, anchors_pem, token_file, API)
    client_id, server_id, alpn = await handshake(api.server_context(), web.client_context(), API)
    assert (client_id, server_id, alpn) == (WEB, API, None)
    _, _, alpn = await handshake(
        api.server_context(), web.client_context(alpn_protocols=["transport.l5d.io/v1"]), API
    )
    assert alpn == "transport.l5d.io/v1"


async def test_mtls_refuses_a_server_with_the_wrong_identity(
    identity_server: IdentityServer, anchors_pem: str, token_file: Path
) -> None:
    web = await certified(identity_server.addr, anchors_pem, token_file, WEB)
    api = await certified(identity_server.addr, anchors_pem, token_file, API)
    with pytest.raises(ssl.SSLCertVerificationError, match=r"Hostname mismatch|doesn't match"):
        await handshake(api.server_context(), web.client_context(), WEB)


async def test_server_admits_tls_clients_without_certificates(
    identity_server: IdentityServer, anchors_pem: str, token_file: Path
) -> None:
    api = await certified(identity_server.addr, anchors_pem, token_file, API)
    anonymous = ssl.create_default_context(cadata=anchors_pem)
    client_id, server_id, _ = await handshake(api.server_context(), anonymous, API)
    assert client_id is None
    assert server_id == API


async def test_server_refuses_a_client_certificate_from_another_ca(
    identity_server: IdentityServer, anchors_pem: str, token_file: Path
) -> None:
    api = await certified(identity_server.addr, anchors_pem, token_file, API)
    other = generate_trust_anchor_and_issuer(
        trust_domain="cluster.local", control_plane_namespace="gossamer", now=now()
    )
    key = generate_private_key()
    foreign = Issuer(other.issuer.certificate, other.issuer.private_key).sign_leaf(
        key.public_key(), WEB, now=now()
    )
    impostor = client_context(
        Credentials(
            identity=WEB,
            key_pem=private_key_to_pem(key),
            chain_pem=certificates_to_pem([foreign.certificate, other.issuer.certificate]),
            leaf_der=foreign.leaf_der,
            not_before=foreign.certificate.not_valid_before_utc.timestamp(),
            not_after=foreign.certificate.not_valid_after_utc.timestamp(),
        ),
        anchors_pem,
    )
    accepted = False

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted = True
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=api.server_context())
    port = server.sockets[0].getsockname()[1]
    try:
        # TLS 1.3: the client finishes its side first; the server's rejection arrives as an
        # alert (or a closed connection) on the first read.
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=impostor, server_hostname=API), 10
        )
        try:
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                assert await asyncio.wait_for(reader.read(), 10) == b""
        finally:
            writer.close()
        assert not accepted
    finally:
        server.close()
        await server.wait_closed()


def test_contexts_need_a_certificate_first(anchors_pem: str, tmp_path: Path) -> None:
    client = make_client("127.0.0.1:1", anchors_pem, tmp_path / "t")
    with pytest.raises(RuntimeError, match="no certificate yet"):
        client.server_context()
