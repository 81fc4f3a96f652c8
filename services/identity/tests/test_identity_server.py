"""The Identity service over gRPC (grpcio's client against the lean unary server).

A fake reviewer stands in for the apiserver: what is tested here is that every check still
runs behind the server and that each refusal reaches the client with Linkerd's status code.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from gossamer_api.proxy import identity_pb2, identity_pb2_grpc
from gossamer_identity.certify import TOKEN_AUDIENCE, Certifier, CertifyConfig
from gossamer_identity.server import IdentityService, create_server
from gossamer_kube.client import TokenReviewResult
from gossamer_tls import (
    Issuer,
    build_csr,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    identity_name,
    verify_chain,
)

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
IDENTITY = identity_name(
    "web", "ns", control_plane_namespace="gossamer", trust_domain="cluster.local"
)
GOOD_TOKEN = "good-token"
TIMEOUT = 5.0


@dataclass
class FakeReviewer:
    """Answers like the apiserver: only GOOD_TOKEN for the identity audience is web's."""

    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    async def token_review(self, token: str, audiences: Sequence[str] = ()) -> TokenReviewResult:
        self.calls.append((token, tuple(audiences)))
        if token == "expired":
            return TokenReviewResult(authenticated=False, error="token has expired")
        if token == "other-audience":
            return TokenReviewResult(
                authenticated=False, error='token audiences ["api"] is invalid'
            )
        if token == "other-account":
            return TokenReviewResult(
                authenticated=True,
                username="system:serviceaccount:ns:db",
                audiences=(TOKEN_AUDIENCE,),
            )
        if token != GOOD_TOKEN or TOKEN_AUDIENCE not in audiences:
            return TokenReviewResult(authenticated=False)
        return TokenReviewResult(
            authenticated=True, username="system:serviceaccount:ns:web", audiences=(TOKEN_AUDIENCE,)
        )


@dataclass
class Served:
    channel: grpc.aio.Channel
    stub: identity_pb2_grpc.IdentityStub
    reviewer: FakeReviewer
    issuer: Issuer
    anchor: x509.Certificate


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    trust = generate_trust_anchor_and_issuer(
        trust_domain="cluster.local", control_plane_namespace="gossamer", now=NOW
    )
    issuer = Issuer(trust.issuer.certificate, trust.issuer.private_key)
    reviewer = FakeReviewer()
    service = IdentityService(
        Certifier(CertifyConfig(control_plane_namespace="gossamer", trust_domain="cluster.local")),
        issuer=lambda: issuer,
        reviewer=reviewer,
        clock=lambda: NOW,
    )
    server = create_server(service)
    port = await server.listen("127.0.0.1", 0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Served(
                channel,
                identity_pb2_grpc.IdentityStub(channel),
                reviewer,
                issuer,
                trust.trust_anchor.certificate,
            )
    finally:
        await server.stop(1.0)


def _request(token: str = GOOD_TOKEN, csr: bytes | None = None) -> identity_pb2.CertifyRequest:
    return identity_pb2.CertifyRequest(
        identity=IDENTITY,
        token=token.encode(),
        certificate_signing_request=csr
        if csr is not None
        else build_csr(generate_private_key(), IDENTITY),
    )


async def _refused(served: Served, request: identity_pb2.CertifyRequest) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.Certify(request, timeout=TIMEOUT)
    return err.value.code()


async def test_a_good_request_gets_a_leaf_that_chains_to_the_anchor(served: Served) -> None:
    key = generate_private_key()
    response = await served.stub.Certify(_request(csr=build_csr(key, IDENTITY)), timeout=TIMEOUT)
    leaf = x509.load_der_x509_certificate(response.leaf_certificate)
    assert leaf.public_key() == key.public_key()
    assert response.intermediate_certificates == [served.issuer.intermediates_der[0]]
    verify_chain(
        leaf,
        [served.issuer.certificate],
        [served.anchor],
        now=NOW,
    )
    assert response.valid_until.seconds == int(leaf.not_valid_after_utc.timestamp())
    assert served.reviewer.calls == [(GOOD_TOKEN, (TOKEN_AUDIENCE,))]


async def test_forged_expired_and_foreign_tokens_are_refused(served: Served) -> None:
    assert await _refused(served, _request("forged")) == grpc.StatusCode.FAILED_PRECONDITION
    assert await _refused(served, _request("expired")) == grpc.StatusCode.INVALID_ARGUMENT
    assert await _refused(served, _request("other-audience")) == grpc.StatusCode.INVALID_ARGUMENT
    assert await _refused(served, _request("other-account")) == grpc.StatusCode.FAILED_PRECONDITION
    # Every one of them was reviewed against the identity audience.
    assert {audiences for _, audiences in served.reviewer.calls} == {(TOKEN_AUDIENCE,)}


async def test_bad_csrs_are_refused_before_any_token_review(served: Served) -> None:
    other = build_csr(generate_private_key(), IDENTITY.replace("web.", "db.", 1))
    assert await _refused(served, _request(csr=other)) == grpc.StatusCode.FAILED_PRECONDITION
    assert await _refused(served, _request(csr=b"\x30\x03junk")) == grpc.StatusCode.INVALID_ARGUMENT
    # A CSR whose signature is not by the key it carries (proof of possession fails).
    good = bytearray(build_csr(generate_private_key(), IDENTITY))
    good[-5] ^= 0x01
    assert await _refused(served, _request(csr=bytes(good))) == grpc.StatusCode.INVALID_ARGUMENT
    p384 = ec.generate_private_key(ec.SECP384R1())
    csr384 = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(IDENTITY)]), critical=True)
        .sign(p384, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    assert await _refused(served, _request(csr=csr384)) == grpc.StatusCode.FAILED_PRECONDITION
    assert served.reviewer.calls == []


async def test_garbage_and_oversized_requests_are_refused(served: Served) -> None:
    channel_call = served.channel.unary_unary(
        "/io.linkerd.proxy.identity.Identity/Certify", None, None
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await channel_call(b"\xff\xff\xff", timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.Certify(_request(token="t" * 70_000), timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert served.reviewer.calls == []


async def test_many_calls_at_once_are_all_answered(served: Served) -> None:
    responses = await asyncio.gather(
        *(served.stub.Certify(_request(), timeout=TIMEOUT) for _ in range(40))
    )
    assert len({r.leaf_certificate for r in responses}) == 40
