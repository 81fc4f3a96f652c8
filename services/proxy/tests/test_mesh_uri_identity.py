"""SPIFFE URI identities: an ExternalWorkload's proxy and the meshed clients that reach it.

The external proxy loads an X.509-SVID (one ``spiffe://`` URI SAN) from files, terminates
mTLS for its TLS server name, and presents the SVID; a meshed client connects with
SNI = the server name and checks the URI identity among the certificate's SANs. Real TLS
1.3 over loopback, certificates from a real issuer (:mod:`gossamer_tls`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
from pathlib import Path

import pytest
from gossamer_api.proxy import destination_pb2
from gossamer_common.metrics import Registry
from gossamer_proxy import local_identity
from gossamer_proxy.config import Endpoint, load_settings
from gossamer_proxy.connect import Connector, UpstreamTls
from gossamer_proxy.errors import ProxyError, ProxyErrorKind
from gossamer_proxy.inbound_tls import classify
from gossamer_proxy.local_identity import (
    IdentityConfigError,
    LocalIdentity,
    identity_from_settings,
    load_static,
)
from gossamer_proxy.mesh.credential_check import CredentialRejected, check_credentials
from gossamer_proxy.mesh.endpoints import endpoint_from_proto
from gossamer_proxy.mesh.tls_detect import ClientHello
from gossamer_proxy.mesh.transport import plan_connect
from gossamer_tls import (
    CertifiedKey,
    Issuer,
    TrustMaterial,
    certificates_to_pem,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    private_key_to_pem,
)
from gossamer_tls.svid import issue_svid, spiffe_id_of
from structlog.testing import capture_logs

WEB = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"
VM = "spiffe://cluster.local/vm/billing"
VM_NAME = "billing.vm.cluster.local"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def trust() -> TrustMaterial:
    return generate_trust_anchor_and_issuer(
        trust_domain="cluster.local", control_plane_namespace="gossamer", now=now()
    )


@pytest.fixture(scope="module")
def anchors_pem(trust: TrustMaterial) -> str:
    return certificates_to_pem([trust.trust_anchor.certificate]).decode()


@pytest.fixture(scope="module")
def svid_files(trust: TrustMaterial, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    svid = issue_svid(
        CertifiedKey(trust.issuer.certificate, trust.issuer.private_key), VM, now=now()
    )
    directory = tmp_path_factory.mktemp("svid")
    (directory / "svid.pem").write_bytes(svid.chain_pem)
    (directory / "svid_key.pem").write_bytes(svid.key_pem)
    return directory / "svid.pem", directory / "svid_key.pem"


@pytest.fixture(scope="module")
def vm_identity(svid_files: tuple[Path, Path], anchors_pem: str) -> LocalIdentity:
    cert, key = svid_files
    settings = load_settings(
        {
            "LINKERD2_PROXY_IDENTITY_SERVER_ID": VM,
            "LINKERD2_PROXY_IDENTITY_SERVER_NAME": VM_NAME,
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": anchors_pem,
            "GOSSAMER_PROXY_IDENTITY_CERT_FILE": str(cert),
            "GOSSAMER_PROXY_IDENTITY_KEY_FILE": str(key),
        }
    )
    identity = identity_from_settings(settings, Registry())
    assert identity is not None
    return identity


@pytest.fixture(scope="module")
def web_identity(trust: TrustMaterial, anchors_pem: str) -> LocalIdentity:
    key = generate_private_key()
    issuer = Issuer(trust.issuer.certificate, trust.issuer.private_key)
    leaf = issuer.sign_leaf(key.public_key(), WEB, now=now())
    chain = certificates_to_pem([leaf.certificate, trust.issuer.certificate])
    credentials = load_static(WEB, anchors_pem, chain, private_key_to_pem(key))
    return LocalIdentity(WEB, anchors_pem, static=credentials)


def test_an_svid_is_checked_against_its_uri_san(
    svid_files: tuple[Path, Path], anchors_pem: str
) -> None:
    cert, key = (p.read_bytes() for p in svid_files)
    credentials = check_credentials(VM, key, cert, anchors_pem)
    assert credentials.identity == VM
    with pytest.raises(CredentialRejected, match=r"URI SANs are \['spiffe://cluster.local/vm/"):
        check_credentials("spiffe://cluster.local/vm/other", key, cert, anchors_pem)
    # A DNS-like identity is never satisfied by a URI SAN.
    with pytest.raises(CredentialRejected):
        check_credentials(VM_NAME, key, cert, anchors_pem)


def test_issued_svid_has_one_uri_san(trust: TrustMaterial) -> None:
    svid = issue_svid(
        CertifiedKey(trust.issuer.certificate, trust.issuer.private_key), VM, now=now()
    )
    assert spiffe_id_of(svid.chain[0]) == VM
    assert svid.chain[0].not_valid_after_utc <= trust.issuer.certificate.not_valid_after_utc


def test_the_external_proxy_terminates_tls_for_its_server_name(
    vm_identity: LocalIdentity,
) -> None:
    assert vm_identity.name == VM
    assert vm_identity.server_name == VM_NAME
    assert classify(ClientHello(VM_NAME, ()), vm_identity.server_name).terminate
    assert classify(ClientHello(WEB, ()), vm_identity.server_name).passthrough_sni == WEB


def test_a_uri_identity_cannot_be_certified_by_the_identity_service(anchors_pem: str) -> None:
    settings = load_settings(
        {
            "LINKERD2_PROXY_IDENTITY_SERVER_ID": VM,
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": anchors_pem,
            "LINKERD2_PROXY_IDENTITY_SVC_ADDR": "127.0.0.1:8080",
        }
    )
    with pytest.raises(IdentityConfigError, match="GOSSAMER_PROXY_IDENTITY_CERT_FILE"):
        identity_from_settings(settings, Registry())


@pytest.mark.parametrize("server_name", [None, VM])
def test_a_static_uri_identity_needs_a_dns_like_server_name(
    svid_files: tuple[Path, Path], anchors_pem: str, server_name: str | None
) -> None:
    # Without it the proxy would terminate mTLS for the spiffe:// string, which no SNI
    # matches: meshed clients would pass through unauthenticated.
    cert, key = svid_files
    environ = {
        "LINKERD2_PROXY_IDENTITY_SERVER_ID": VM,
        "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": anchors_pem,
        "GOSSAMER_PROXY_IDENTITY_CERT_FILE": str(cert),
        "GOSSAMER_PROXY_IDENTITY_KEY_FILE": str(key),
    }
    if server_name is not None:
        environ["LINKERD2_PROXY_IDENTITY_SERVER_NAME"] = server_name
    with pytest.raises(IdentityConfigError, match="LINKERD2_PROXY_IDENTITY_SERVER_NAME"):
        identity_from_settings(load_settings(environ), Registry())


def test_discovery_sends_uri_identity_and_server_name_to_the_connect_plan() -> None:
    message = destination_pb2.WeightedAddr(weight=1)
    message.addr.ip.ipv4 = 0xC000020A
    message.addr.port = 8080
    message.tls_identity.uri_like_identity.uri = VM
    message.tls_identity.server_name.name = VM_NAME
    message.protocol_hint.opaque_transport.inbound_port = 4143
    plan = plan_connect(endpoint_from_proto(message), session_protocol=None)
    assert (plan.host, plan.port) == ("192.0.2.10", 4143)
    assert plan.server_identity == VM
    assert plan.sni == VM_NAME


class _Echo(asyncio.Protocol):
    def __init__(self, got: asyncio.Queue[bytes]) -> None:
        self.got = got

    def data_received(self, data: bytes) -> None:
        self.got.put_nowait(data)


@pytest.fixture
def seen_client_ids() -> list[str | None]:
    return []


async def _serve_vm(
    vm_identity: LocalIdentity, seen: list[str | None]
) -> tuple[asyncio.Server, int, asyncio.Queue[bytes]]:
    from gossamer_proxy.mesh.tls_contexts import peer_identity

    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(peer_identity(writer.get_extra_info("ssl_object")))
        got.put_nowait(await reader.read(100))
        writer.close()

    context = vm_identity.server_context()
    assert context is not None
    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1], got


async def test_a_meshed_client_reaches_the_uri_identity_by_server_name(
    vm_identity: LocalIdentity, web_identity: LocalIdentity, seen_client_ids: list[str | None]
) -> None:
    server, port, got = await _serve_vm(vm_identity, seen_client_ids)
    connector = Connector(5.0, web_identity)
    try:
        plan = UpstreamTls(Endpoint("127.0.0.1", port), server_identity=VM, sni=VM_NAME)
        transport, _ = await connector.open(
            Endpoint("192.0.2.10", 8080), lambda: _Echo(asyncio.Queue()), tls=plan
        )
        transport.write(b"hello vm")
        assert await asyncio.wait_for(got.get(), 5) == b"hello vm"
        transport.close()
        # The server saw the client's DNS-like identity.
        assert seen_client_ids == [WEB]
        wrong = UpstreamTls(
            Endpoint("127.0.0.1", port), server_identity="spiffe://cluster.local/vm/x", sni=VM_NAME
        )
        with pytest.raises(ProxyError) as caught:
            await connector.open(
                Endpoint("192.0.2.10", 8080), lambda: _Echo(asyncio.Queue()), tls=wrong
            )
        assert caught.value.kind is ProxyErrorKind.IDENTITY_MISMATCH
        assert VM in str(caught.value)
    finally:
        server.close()
        await server.wait_closed()


def test_a_rotated_svid_is_installed_and_a_broken_one_refused(
    trust: TrustMaterial, anchors_pem: str, tmp_path: Path
) -> None:
    issuer = CertifiedKey(trust.issuer.certificate, trust.issuer.private_key)
    cert, key = tmp_path / "svid.pem", tmp_path / "svid_key.pem"
    first = issue_svid(issuer, VM, now=now())
    cert.write_bytes(first.chain_pem)
    key.write_bytes(first.key_pem)
    registry = Registry()
    settings = load_settings(
        {
            "LINKERD2_PROXY_IDENTITY_SERVER_ID": VM,
            "LINKERD2_PROXY_IDENTITY_SERVER_NAME": VM_NAME,
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": anchors_pem,
            "GOSSAMER_PROXY_IDENTITY_CERT_FILE": str(cert),
            "GOSSAMER_PROXY_IDENTITY_KEY_FILE": str(key),
        }
    )
    identity = identity_from_settings(settings, registry)
    assert identity is not None
    before = identity.credentials
    assert before is not None
    assert identity.reload_files() is None  # unchanged files: nothing to do
    assert identity.credentials is before

    # A helper writes the new certificate first: until the key follows, the pair does not
    # load together and the current SVID stays.
    second = issue_svid(issuer, VM, now=now())
    cert.write_bytes(second.chain_pem)
    refused = identity.reload_files()
    assert refused is not None
    assert "do not load together" in refused
    assert identity.credentials is before
    key.write_bytes(second.key_pem)
    assert identity.reload_files() is None
    after = identity.credentials
    assert after is not None
    assert after is not before
    assert after.chain_pem == second.chain_pem
    assert identity.server_context() is not None  # contexts follow the new certificate
    assert "identity_cert_refresh_count 2" in registry.render().decode()

    # An SVID for another workload is refused, whatever its chain.
    other = issue_svid(issuer, "spiffe://cluster.local/vm/other", now=now())
    cert.write_bytes(other.chain_pem)
    key.write_bytes(other.key_pem)
    refused = identity.reload_files()
    assert refused is not None
    assert "URI SANs" in refused
    assert identity.credentials is after


class _StopWatching(BaseException):
    """Ends a file watcher under test (a BaseException, as cancellation is)."""


async def test_the_file_watcher_survives_any_failure_and_logs_repeats_once(
    vm_identity: LocalIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An EMFILE from the key's memfd (raised inside check_credentials, past the read) or
    # any other bug must not end the watcher: the SVID would never rotate again.
    failures: list[BaseException] = [
        OSError(errno.EMFILE, "Too many open files"),
        OSError(errno.EMFILE, "Too many open files"),
        OSError(errno.EMFILE, "Too many open files"),
        RuntimeError("boom"),
    ]
    reloads = 0

    def reload_files() -> str | None:
        nonlocal reloads
        reloads += 1
        if failures:
            raise failures.pop(0)
        return None

    rounds = 0

    async def sleep(_interval: float) -> None:
        nonlocal rounds
        rounds += 1
        if rounds > 6:
            raise _StopWatching

    monkeypatch.setattr(vm_identity, "reload_files", reload_files)
    with capture_logs() as logs, pytest.raises(_StopWatching):
        await vm_identity._watch_files(sleep)
    assert reloads == 6  # every round reloaded, after each failure too
    failed = [entry for entry in logs if entry["event"] == "identity_files_reload_failed"]
    assert [(entry["error"], entry["repeats"]) for entry in failed] == [
        ("OSError: [Errno 24] Too many open files", 1),
        ("RuntimeError: boom", 1),
    ]


def test_an_svid_rotated_while_the_proxy_starts_is_installed_at_the_first_check(
    trust: TrustMaterial, anchors_pem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    issuer = CertifiedKey(trust.issuer.certificate, trust.issuer.private_key)
    cert, key = tmp_path / "svid.pem", tmp_path / "svid_key.pem"
    first, second = issue_svid(issuer, VM, now=now()), issue_svid(issuer, VM, now=now())
    cert.write_bytes(first.chain_pem)
    key.write_bytes(first.key_pem)
    load = local_identity.load_static

    def rotate_while_loading(*args: object) -> object:
        # The SVID helper rewrites the pair after the proxy read it, before it settled.
        credentials = load(*args)  # type: ignore[arg-type]
        cert.write_bytes(second.chain_pem + b"\n")
        key.write_bytes(second.key_pem)
        return credentials

    monkeypatch.setattr(local_identity, "load_static", rotate_while_loading)
    settings = load_settings(
        {
            "LINKERD2_PROXY_IDENTITY_SERVER_ID": VM,
            "LINKERD2_PROXY_IDENTITY_SERVER_NAME": VM_NAME,
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": anchors_pem,
            "GOSSAMER_PROXY_IDENTITY_CERT_FILE": str(cert),
            "GOSSAMER_PROXY_IDENTITY_KEY_FILE": str(key),
        }
    )
    identity = identity_from_settings(settings, Registry())
    monkeypatch.setattr(local_identity, "load_static", load)
    assert identity is not None
    started = identity.credentials
    assert started is not None
    assert started.chain_pem == first.chain_pem
    assert identity.reload_files() is None
    rotated = identity.credentials
    assert rotated is not None
    assert rotated.chain_pem.strip() == second.chain_pem.strip()
