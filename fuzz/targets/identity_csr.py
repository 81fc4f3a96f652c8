"""The identity service's Certify path, without a kube-apiserver.

Decodes a ``CertifyRequest`` (raw protobuf bytes, or identity/token/CSR built from choices
with CSRs mutated from real ones of several key types and name sets), then runs what
:meth:`gossamer_identity.server.IdentityService.certify` runs:
:meth:`Certifier.check_request`, :meth:`Certifier.authorize` on a made-up TokenReview
verdict, and :meth:`Certifier.sign` with a real issuer.

Contract checked: protobuf decoding raises only ``DecodeError``; ``check_request`` raises
only :class:`Refusal` with a client-error status; ``authorize`` only :class:`Refusal`;
``sign`` never fails for an authorized request, and the leaf names exactly the requested
identity and carries the CSR's public key.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from google.protobuf.message import DecodeError
from gossamer_api.proxy import identity_pb2
from gossamer_identity.certify import Authorized, Certifier, CertifyConfig, Refusal, Status
from gossamer_tls import Issuer, build_csr, generate_trust_anchor_and_issuer

from ..harness import Finding, Target
from ..ops import Choices

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
IDENTITY = "web.shop.serviceaccount.identity.gossamer.cluster.local"
USERNAME = "system:serviceaccount:shop:web"
CLIENT_ERRORS = {Status.INVALID_ARGUMENT, Status.FAILED_PRECONDITION, Status.RESOURCE_EXHAUSTED}
CERTIFIER = Certifier(
    CertifyConfig(control_plane_namespace="gossamer", trust_domain="cluster.local")
)
LEGACY = Certifier(
    CertifyConfig(
        control_plane_namespace="gossamer",
        trust_domain="cluster.local",
        legacy_audience_fallback=True,
    )
)
_TRUST = generate_trust_anchor_and_issuer(
    trust_domain="cluster.local", control_plane_namespace="gossamer", now=NOW
)
ISSUER = Issuer(
    certificate=_TRUST.issuer.certificate,
    private_key=_TRUST.issuer.private_key,
    ceiling=_TRUST.trust_anchor.certificate.not_valid_after_utc,
)

IDENTITIES = (
    IDENTITY,
    "db.shop.serviceaccount.identity.gossamer.cluster.local",
    "web.shop.serviceaccount.identity.gossamer.cluster.local.",
    "WEB.shop.serviceaccount.identity.gossamer.cluster.local",
    "web.shop.serviceaccount.identity.other.cluster.local",
    "*.shop.serviceaccount.identity.gossamer.cluster.local",
    "web",
    "",
)
USERNAMES = (
    USERNAME,
    "system:serviceaccount:shop:db",
    "system:serviceaccount:shop",
    "system:serviceaccount::web",
    "system:serviceaccount:shop:web:x",
    "admin",
    "",
)
ERRORS = ("", "token has invalid audience", "token has expired", "invalid bearer token")
AUDIENCES = ((), ("identity.l5d.io",), ("api",), ("api", "identity.l5d.io"))


def _csr(key: object, names: list[str], common_name: str | None) -> bytes:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]


def _weak_rsa_key() -> rsa.RSAPrivateKey:
    """An RSA key: the identity service must refuse it (only ECDSA P-256 is accepted)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505


def _base_csrs() -> list[bytes]:
    p256 = ec.generate_private_key(ec.SECP256R1())
    return [
        build_csr(p256, IDENTITY),
        _csr(p256, [IDENTITY], IDENTITY),
        _csr(p256, [IDENTITY, "other.example"], None),
        _csr(p256, [], IDENTITY),
        _csr(ec.generate_private_key(ec.SECP384R1()), [IDENTITY], None),
        _csr(_weak_rsa_key(), [IDENTITY], None),
        _csr(ed25519.Ed25519PrivateKey.generate(), [IDENTITY], None),
    ]


BASE_CSRS = _base_csrs()


@dataclass(frozen=True)
class Review:
    authenticated: bool
    username: str
    audiences: tuple[str, ...]
    error: str


def _mutate(choices: Choices, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(choices.below(5)):
        if not data:
            break
        kind = choices.below(5)
        at = choices.below(len(data))
        if kind == 0:
            data[at] ^= 1 << choices.below(8)
        elif kind == 1:
            data[at] = choices.u8()
        elif kind == 2:
            del data[at:]
        elif kind == 3:
            data[at:at] = choices.blob(8)
        else:
            del data[at : at + 1 + choices.below(8)]
    return bytes(data)


def _request(choices: Choices) -> identity_pb2.CertifyRequest:
    mode = choices.u8()
    if mode & 3 == 0:
        request = identity_pb2.CertifyRequest()
        request.ParseFromString(choices.rest())  # DecodeError: gRPC refuses it first
        return request
    roll = choices.u8()
    identity = (
        IDENTITIES[roll % len(IDENTITIES)]
        if roll < 200
        else choices.blob(80).decode("utf-8", "replace")
    )
    token = b"header.payload.signature" if choices.u8() < 220 else choices.blob(40)
    csr = _mutate(choices, BASE_CSRS[choices.below(len(BASE_CSRS))])
    if mode & 3 == 3:
        csr = choices.rest()
    return identity_pb2.CertifyRequest(
        identity=identity, token=token, certificate_signing_request=csr
    )


def one_input(data: bytes) -> None:
    choices = Choices(data)
    certifier = LEGACY if choices.u8() & 1 else CERTIFIER
    request = _request(choices)
    try:
        pending = certifier.check_request(
            request.identity,
            request.token,
            request.certificate_signing_request,
            issuer_ready=True,
        )
    except Refusal as refusal:
        if refusal.status not in CLIENT_ERRORS or not refusal.message:
            raise Finding(f"check_request refused with {refusal.status!r}") from refusal
        return
    review = Review(
        authenticated=choices.u8() < 230,
        username=USERNAMES[choices.below(len(USERNAMES))],
        audiences=AUDIENCES[choices.below(len(AUDIENCES))],
        error=ERRORS[choices.below(len(ERRORS))] if choices.u8() < 60 else "",
    )
    try:
        verdict = certifier.authorize(pending, review)
    except Refusal:
        return
    if not isinstance(verdict, Authorized):
        return  # the legacy retry: a second review would follow
    issued = certifier.sign(pending, verdict, ISSUER, now=NOW)
    leaf = x509.load_der_x509_certificate(issued.leaf_der)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if names.get_values_for_type(x509.DNSName) != [pending.identity]:
        raise Finding(f"leaf names {names} for {pending.identity!r}", key="leaf names differ")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(*spki) != pending.csr.public_key.public_bytes(*spki):
        raise Finding("leaf key differs from the CSR's key")


def seeds() -> list[bytes]:
    out = []
    for i in range(len(BASE_CSRS)):
        out.append(bytes([0, 1, 0, 0, 0, i, 0, 0, 0, 0]))
    raw = identity_pb2.CertifyRequest(
        identity=IDENTITY, token=b"t.t.t", certificate_signing_request=BASE_CSRS[0]
    ).SerializeToString()
    out.append(bytes([0, 0]) + raw)
    out.append(bytes([0, 3, 0, 0]) + BASE_CSRS[1])
    return out


TARGET = Target(
    name="identity_csr",
    one_input=one_input,
    expected=(DecodeError,),
    seeds=seeds,
    max_len=2048,
)
