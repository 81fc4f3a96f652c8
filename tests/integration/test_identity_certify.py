"""The identity service as a real process against the real kube-apiserver, over real gRPC.

A pod's bound service-account token (TokenRequest, audience identity.l5d.io) must get a leaf that
verifies against the anchors; forged, expired, wrong-audience and other-account tokens must be
refused with Linkerd's status codes; rotating the issuer files must change the issuer of new
certificates without a restart; and the token must never reach the log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from gossamer_api.proxy import identity_pb2, identity_pb2_grpc
from gossamer_kube.client import BoundPod, KubeClient
from gossamer_kube.errors import KubeApiError
from gossamer_kube.resources import PODS, SERVICEACCOUNTS
from gossamer_kube.testing.cluster import SA_ISSUER, KubeTestCluster
from gossamer_tls import (
    TrustMaterial,
    build_csr,
    certificates_to_pem,
    create_issuer,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    identity_name,
    load_certificate,
    private_key_to_pem,
    verify_chain,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

AUDIENCE = "identity.l5d.io"
CONTROL_NS = "gossamer"
TRUST_DOMAIN = "cluster.local"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class IdentityProcess:
    process: subprocess.Popen[bytes]
    grpc_addr: str
    admin_url: str
    issuer_dir: Path
    trust: TrustMaterial
    log: Path

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def write_issuer(self, issuer_cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        """Rotate like a kubelet: write a new payload dir, then swap the ..data symlink."""
        payload = self.issuer_dir / f"..{time.monotonic_ns()}"
        payload.mkdir()
        (payload / "crt.pem").write_bytes(certificates_to_pem([issuer_cert]))
        (payload / "key.pem").write_bytes(private_key_to_pem(key))
        tmp = self.issuer_dir / "..data_tmp"
        tmp.symlink_to(payload.name)
        os.replace(tmp, self.issuer_dir / "..data")
        for name in ("crt.pem", "key.pem"):
            if not (self.issuer_dir / name).is_symlink():
                (self.issuer_dir / name).symlink_to(f"..data/{name}")


@pytest.fixture(scope="module")
def identity_service(
    kube_cluster: KubeTestCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IdentityProcess]:
    root = tmp_path_factory.mktemp("identity")
    trust = generate_trust_anchor_and_issuer(
        trust_domain=TRUST_DOMAIN, control_plane_namespace=CONTROL_NS, now=dt.datetime.now(dt.UTC)
    )
    (root / "trust").mkdir()
    anchors = root / "trust" / "ca-bundle.crt"
    anchors.write_bytes(certificates_to_pem([trust.trust_anchor.certificate]))
    issuer_dir = root / "issuer"
    issuer_dir.mkdir()
    grpc_port, admin_port = free_port(), free_port()
    log = root / "identity.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "gossamer_identity",
                f"--kubeconfig={kube_cluster.kubeconfig}",
                f"--addr=127.0.0.1:{grpc_port}",
                f"--admin-addr=127.0.0.1:{admin_port}",
                f"--issuer={issuer_dir}",
                f"--trust-anchors-path={anchors}",
                f"--controller-namespace={CONTROL_NS}",
                f"--identity-trust-domain={TRUST_DOMAIN}",
                "--issuer-poll-interval=200ms",
                "--log-level=debug",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    service = IdentityProcess(
        process, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{admin_port}", issuer_dir, trust, log
    )
    service.write_issuer(trust.issuer.certificate, trust.issuer.private_key)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"identity exited with {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(OSError):
                if service.get("/ready")[0] == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"identity never became ready:\n{log.read_text()}")
            time.sleep(0.1)
        yield service
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest_asyncio.fixture
async def stub(
    identity_service: IdentityProcess,
) -> AsyncIterator[identity_pb2_grpc.IdentityAsyncStub]:
    async with grpc.aio.insecure_channel(identity_service.grpc_addr) as channel:
        yield identity_pb2_grpc.IdentityStub(channel)


async def make_pod(client: KubeClient, namespace: str, sa: str, node: str) -> BoundPod:
    try:
        await client.create(SERVICEACCOUNTS, {"metadata": {"name": sa}}, namespace)
    except KubeApiError as exc:
        if not exc.conflict:  # 409: an earlier pod of the test made it already
            raise
    pod = await client.create(
        PODS,
        {
            "metadata": {"name": f"{sa}-{secrets.token_hex(3)}"},
            "spec": {
                "serviceAccountName": sa,
                "nodeName": node,
                "containers": [{"name": "app", "image": "example.invalid/app:1"}],
            },
        },
        namespace,
    )
    return BoundPod.of(pod)


async def pod_token(
    client: KubeClient, namespace: str, sa: str, node: str, audience: str = AUDIENCE
) -> str:
    pod = await make_pod(client, namespace, sa, node)
    return await client.token_request(namespace, sa, [audience], 600, bound_pod=pod)


def identity_of(sa: str, namespace: str) -> str:
    return identity_name(
        sa, namespace, control_plane_namespace=CONTROL_NS, trust_domain=TRUST_DOMAIN
    )


async def certify(
    stub: identity_pb2_grpc.IdentityAsyncStub, identity: str, token: str | bytes, csr: bytes
) -> identity_pb2.CertifyResponse:
    raw = token.encode() if isinstance(token, str) else token
    request = identity_pb2.CertifyRequest(
        identity=identity, token=raw, certificate_signing_request=csr
    )
    return await stub.Certify(request, timeout=30)


async def refused(
    stub: identity_pb2_grpc.IdentityAsyncStub, identity: str, token: str | bytes, csr: bytes
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await certify(stub, identity, token, csr)
    return info.value


async def certify_or_error(
    stub: identity_pb2_grpc.IdentityAsyncStub, identity: str, token: str | bytes, csr: bytes
) -> identity_pb2.CertifyResponse | grpc.aio.AioRpcError:
    try:
        return await certify(stub, identity, token, csr)
    except grpc.aio.AioRpcError as error:
        return error


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_jwt(key: rsa.RSAPrivateKey, claims: dict[str, Any]) -> str:
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{b64url(signature)}"


async def test_pod_token_gets_a_leaf_that_verifies(
    identity_service: IdentityProcess,
    stub: identity_pb2_grpc.IdentityAsyncStub,
    kube_client: KubeClient,
    kube_namespace: str,
    kube_cluster: KubeTestCluster,
) -> None:
    token = await pod_token(kube_client, kube_namespace, "web", kube_cluster.node_name)
    identity = identity_of("web", kube_namespace)
    key = generate_private_key()
    before = dt.datetime.now(dt.UTC)
    response = await certify(stub, identity, token, build_csr(key, identity))
    leaf = load_certificate(response.leaf_certificate)
    intermediates = [load_certificate(der) for der in response.intermediate_certificates]
    assert intermediates == [identity_service.trust.issuer.certificate]
    chain = verify_chain(
        leaf,
        intermediates,
        [identity_service.trust.trust_anchor.certificate],
        now=dt.datetime.now(dt.UTC),
        dns_name=identity,
    )
    assert chain.anchor == identity_service.trust.trust_anchor.certificate
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [identity]
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(
        hours=24, seconds=40
    )
    assert before - dt.timedelta(seconds=21) <= leaf.not_valid_before_utc <= dt.datetime.now(dt.UTC)
    assert response.valid_until.ToDatetime(tzinfo=dt.UTC) == leaf.not_valid_after_utc
    # The token is a secret: it never appears in the service's log.
    assert token not in identity_service.log.read_text()


async def test_forged_token_is_refused(
    stub: identity_pb2_grpc.IdentityAsyncStub, kube_namespace: str
) -> None:
    identity = identity_of("web", kube_namespace)
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    forged = signed_jwt(
        forger,
        {
            "iss": SA_ISSUER,
            "aud": [AUDIENCE],
            "sub": f"system:serviceaccount:{kube_namespace}:web",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
        },
    )
    for token in (forged, "not-a-jwt-at-all"):
        error = await refused(stub, identity, token, build_csr(generate_private_key(), identity))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert token not in (error.details() or "")


async def test_expired_token_is_refused(
    stub: identity_pb2_grpc.IdentityAsyncStub,
    kube_client: KubeClient,
    kube_namespace: str,
    kube_cluster: KubeTestCluster,
) -> None:
    """A token the cluster itself signed (its SA signing key), expired an hour ago."""
    pod = await make_pod(kube_client, kube_namespace, "web", kube_cluster.node_name)
    sa = await kube_client.get(SERVICEACCOUNTS, "web", kube_namespace)
    signing_key = serialization.load_pem_private_key(
        (kube_cluster.state_dir / "pki" / "sa.key").read_bytes(), password=None
    )
    assert isinstance(signing_key, rsa.RSAPrivateKey)
    then = int(time.time()) - 7200
    expired = signed_jwt(
        signing_key,
        {
            "iss": SA_ISSUER,
            "aud": [AUDIENCE],
            "sub": f"system:serviceaccount:{kube_namespace}:web",
            "iat": then,
            "nbf": then,
            "exp": then + 3600,
            "kubernetes.io": {
                "namespace": kube_namespace,
                "serviceaccount": {"name": "web", "uid": sa["metadata"]["uid"]},
                "pod": {"name": pod.name, "uid": pod.uid},
            },
        },
    )
    identity = identity_of("web", kube_namespace)
    error = await refused(stub, identity, expired, build_csr(generate_private_key(), identity))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expired" in (error.details() or "")


async def test_wrong_audience_token_is_refused(
    stub: identity_pb2_grpc.IdentityAsyncStub,
    kube_client: KubeClient,
    kube_namespace: str,
    kube_cluster: KubeTestCluster,
) -> None:
    token = await pod_token(
        kube_client, kube_namespace, "web", kube_cluster.node_name, audience="not-identity.example"
    )
    identity = identity_of("web", kube_namespace)
    error = await refused(stub, identity, token, build_csr(generate_private_key(), identity))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "audience" in (error.details() or "")


async def test_token_of_a_deleted_pod_is_refused(
    stub: identity_pb2_grpc.IdentityAsyncStub,
    kube_client: KubeClient,
    kube_namespace: str,
    kube_cluster: KubeTestCluster,
) -> None:
    pod = await make_pod(kube_client, kube_namespace, "web", kube_cluster.node_name)
    token = await kube_client.token_request(kube_namespace, "web", [AUDIENCE], 600, bound_pod=pod)
    await kube_client.delete(PODS, pod.name, kube_namespace, grace_period_seconds=0)
    identity = identity_of("web", kube_namespace)
    deadline = time.monotonic() + 30
    while True:  # deletion completes asynchronously (kwok finalizes it)
        outcome = await certify_or_error(
            stub, identity, token, build_csr(generate_private_key(), identity)
        )
        if isinstance(outcome, grpc.aio.AioRpcError):
            break
        assert time.monotonic() < deadline, "token still accepted after the pod was deleted"
        await asyncio.sleep(0.2)
    assert outcome.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_csr_for_another_service_account_is_refused(
    stub: identity_pb2_grpc.IdentityAsyncStub,
    kube_client: KubeClient,
    kube_namespace: str,
    kube_cluster: KubeTestCluster,
) -> None:
    token = await pod_token(kube_client, kube_namespace, "web", kube_cluster.node_name)
    db = identity_of("db", kube_namespace)
    # Asking for db's identity with web's token.
    error = await refused(stub, db, token, build_csr(generate_private_key(), db))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "entitled to" in (error.details() or "")
    # A CSR naming db under web's identity field.
    web = identity_of("web", kube_namespace)
    error = await refused(stub, web, token, build_csr(generate_private_key(), db))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_bad_requests_map_to_linkerd_codes(
    stub: identity_pb2_grpc.IdentityAsyncStub,
    kube_client: KubeClient,
    kube_namespace: str,
    kube_cluster: KubeTestCluster,
) -> None:
    token = await pod_token(kube_client, kube_namespace, "web", kube_cluster.node_name)
    identity = identity_of("web", kube_namespace)
    csr = build_csr(generate_private_key(), identity)
    assert (
        await refused(stub, identity, token, b"\x30\x03garbage")
    ).code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await refused(stub, "", token, csr)).code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await refused(stub, identity, b"", csr)).code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        await refused(stub, identity, b"x" * 20000, csr)
    ).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (
        await refused(stub, identity, token, b"\x30" * 100_000)
    ).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    p384 = ec.generate_private_key(ec.SECP384R1())
    der = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(identity)]), critical=False)
        .sign(p384, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    assert (await refused(stub, identity, token, der)).code() == grpc.StatusCode.FAILED_PRECONDITION


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(csr=st.binary(max_size=600))
def test_fuzzed_csr_over_grpc_never_crashes(identity_service: IdentityProcess, csr: bytes) -> None:
    """Random CSR bytes through the real server: always a client-error status, never INTERNAL."""
    identity = "web.fuzz.serviceaccount.identity.gossamer.cluster.local"
    with grpc.insecure_channel(identity_service.grpc_addr) as channel:
        sync_stub = identity_pb2_grpc.IdentityStub(channel)
        request = identity_pb2.CertifyRequest(
            identity=identity, token=b"t.t.t", certificate_signing_request=csr
        )
        with pytest.raises(grpc.RpcError) as info:
            sync_stub.Certify(request, timeout=30)
    assert info.value.code() in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert identity_service.process.poll() is None


async def test_rotation_changes_the_issuer_without_restart(
    identity_service: IdentityProcess,
    stub: identity_pb2_grpc.IdentityAsyncStub,
    kube_client: KubeClient,
    kube_namespace: str,
    kube_cluster: KubeTestCluster,
) -> None:
    token = await pod_token(kube_client, kube_namespace, "web", kube_cluster.node_name)
    identity = identity_of("web", kube_namespace)
    pid = identity_service.process.pid
    original = identity_service.trust
    rotated = create_issuer(
        original.trust_anchor,
        common_name=f"identity.{CONTROL_NS}.{TRUST_DOMAIN}",
        now=dt.datetime.now(dt.UTC),
        permitted_dns_domains=[f"identity.{CONTROL_NS}.{TRUST_DOMAIN}"],
    )
    try:
        identity_service.write_issuer(rotated.certificate, rotated.private_key)
        deadline = time.monotonic() + 30
        while True:
            response = await certify(
                stub, identity, token, build_csr(generate_private_key(), identity)
            )
            leaf = load_certificate(response.leaf_certificate)
            if leaf.extensions.get_extension_for_class(
                x509.AuthorityKeyIdentifier
            ).value.key_identifier == (
                rotated.certificate.extensions.get_extension_for_class(
                    x509.SubjectKeyIdentifier
                ).value.digest
            ):
                break
            assert time.monotonic() < deadline, "new certificates still come from the old issuer"
            await asyncio.sleep(0.1)
        assert [load_certificate(d) for d in response.intermediate_certificates] == [
            rotated.certificate
        ]
        verify_chain(
            leaf,
            [rotated.certificate],
            [original.trust_anchor.certificate],
            now=dt.datetime.now(dt.UTC),
        )
        assert identity_service.process.pid == pid
        assert identity_service.process.poll() is None
        status, metrics = identity_service.get("/metrics")
        assert status == 200
        assert 'identity_issuer_reloads_total{result="success"} 1' in metrics
        expiry = rotated.certificate.not_valid_after_utc.timestamp()
        assert f"identity_issuer_expiry_timestamp_seconds {int(expiry)}" in metrics
    finally:
        identity_service.write_issuer(original.issuer.certificate, original.issuer.private_key)


def test_admin_endpoints(identity_service: IdentityProcess) -> None:
    assert identity_service.get("/live") == (200, "live\n")
    assert identity_service.get("/ready") == (200, "ready\n")
    status, metrics = identity_service.get("/metrics")
    assert status == 200
    assert "identity_certificates_issued_total" in metrics
    assert (
        'identity_certify_refusals_total{reason="malformed_csr",code="INVALID_ARGUMENT"}' in metrics
    )
    assert "issuer_cert_ttl_seconds" in metrics
