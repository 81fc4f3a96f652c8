"""The sans-io Certify decision: every refusal path with its gRPC status and reason."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from gossamer_identity.certify import (
    TOKEN_AUDIENCE,
    Authorized,
    Certifier,
    CertifyConfig,
    Limits,
    Reason,
    Refusal,
    RetryWithoutAudiences,
    Status,
)
from gossamer_tls import (
    Issuer,
    TrustMaterial,
    build_csr,
    create_issuer,
    create_trust_anchor,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    verify_chain,
)

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
IDENTITY = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"
USERNAME = "system:serviceaccount:emojivoto:web"
TOKEN = b"eyJhbGciOiJSUzI1NiJ9.payload.signature"


@dataclass(frozen=True)
class Review:
    authenticated: bool = True
    username: str = USERNAME
    audiences: tuple[str, ...] = (TOKEN_AUDIENCE,)
    error: str = ""


@pytest.fixture(scope="module")
def trust() -> TrustMaterial:
    return generate_trust_anchor_and_issuer(
        trust_domain="cluster.local", control_plane_namespace="gossamer", now=NOW
    )


@pytest.fixture(scope="module")
def issuer(trust: TrustMaterial) -> Issuer:
    return Issuer(trust.issuer.certificate, trust.issuer.private_key)


@pytest.fixture
def certifier() -> Certifier:
    return Certifier(
        CertifyConfig(control_plane_namespace="gossamer", trust_domain="cluster.local")
    )


def refusal_of(call: Callable[..., object], *args: object, **kwargs: object) -> Refusal:
    with pytest.raises(Refusal) as info:
        call(*args, **kwargs)
    return info.value


def test_happy_path_issues_a_verifying_leaf(
    certifier: Certifier, issuer: Issuer, trust: TrustMaterial
) -> None:
    csr = build_csr(generate_private_key(), IDENTITY)
    pending = certifier.check_request(IDENTITY, TOKEN + b"\n", csr, issuer_ready=True)
    assert pending.token == TOKEN.decode()  # trailing newline of the token file stripped
    assert TOKEN.decode() not in repr(pending)
    assert pending.audiences == (TOKEN_AUDIENCE,)
    verdict = certifier.authorize(pending, Review())
    assert verdict == Authorized(identity=IDENTITY, username=USERNAME)
    assert isinstance(verdict, Authorized)
    issued = certifier.sign(pending, verdict, issuer, now=NOW)
    assert issued.valid_until == NOW + dt.timedelta(hours=24, seconds=20)
    verify_chain(
        issued.certificate,
        [trust.issuer.certificate],
        [trust.trust_anchor.certificate],
        now=NOW,
        dns_name=IDENTITY,
    )


def test_configured_lifetime_and_skew(issuer: Issuer) -> None:
    certifier = Certifier(
        CertifyConfig(
            control_plane_namespace="gossamer",
            trust_domain="cluster.local",
            lifetime=dt.timedelta(hours=2),
            clock_skew=dt.timedelta(seconds=5),
        )
    )
    pending = certifier.check_request(
        IDENTITY, TOKEN, build_csr(generate_private_key(), IDENTITY), issuer_ready=True
    )
    verdict = certifier.authorize(pending, Review())
    assert isinstance(verdict, Authorized)
    issued = certifier.sign(pending, verdict, issuer, now=NOW)
    assert issued.certificate.not_valid_before_utc == NOW - dt.timedelta(seconds=5)
    assert issued.valid_until == NOW + dt.timedelta(hours=2, seconds=5)


def test_issuer_not_ready(certifier: Certifier) -> None:
    refusal = refusal_of(certifier.check_request, IDENTITY, TOKEN, b"x", issuer_ready=False)
    assert (refusal.status, refusal.reason) == (Status.UNAVAILABLE, Reason.ISSUER_NOT_READY)
    assert refusal.message == "cert issuer not ready yet"


@pytest.mark.parametrize(
    ("identity", "token", "csr", "missing"),
    [
        ("", TOKEN, b"csr", "identity"),
        (IDENTITY, b"", b"csr", "token"),
        (IDENTITY, TOKEN, b"", "CSR"),
        ("", b"", b"", "identity, token, CSR"),
    ],
)
def test_missing_fields(
    certifier: Certifier, identity: str, token: bytes, csr: bytes, missing: str
) -> None:
    refusal = refusal_of(certifier.check_request, identity, token, csr, issuer_ready=True)
    assert (refusal.status, refusal.reason) == (Status.INVALID_ARGUMENT, Reason.MISSING_FIELD)
    assert refusal.message == f"missing {missing} in Certify request"


@pytest.mark.parametrize("field", ["token", "csr", "identity"])
def test_oversized_fields(field: str) -> None:
    certifier = Certifier(
        CertifyConfig(
            control_plane_namespace="gossamer",
            trust_domain="cluster.local",
            limits=Limits(max_token_bytes=100, max_csr_bytes=100, max_identity_bytes=50),
        )
    )
    args = {"identity": IDENTITY[:40], "token": b"t", "csr": b"c"}
    args[field] = {"token": b"t" * 101, "csr": b"c" * 101, "identity": IDENTITY}[field]
    refusal = refusal_of(
        certifier.check_request, args["identity"], args["token"], args["csr"], issuer_ready=True
    )
    assert (refusal.status, refusal.reason) == (Status.RESOURCE_EXHAUSTED, Reason.OVERSIZED)


def test_malformed_identity(certifier: Certifier) -> None:
    refusal = refusal_of(certifier.check_request, "not an identity", TOKEN, b"c", issuer_ready=True)
    assert (refusal.status, refusal.reason) == (Status.INVALID_ARGUMENT, Reason.INVALID_IDENTITY)


@pytest.mark.parametrize("token", [b"\xff\xfe", b"abc\x00def", b"   \n"])
def test_token_encoding(certifier: Certifier, token: bytes) -> None:
    refusal = refusal_of(certifier.check_request, IDENTITY, token, b"c", issuer_ready=True)
    assert (refusal.status, refusal.reason) == (
        Status.INVALID_ARGUMENT,
        Reason.INVALID_TOKEN_ENCODING,
    )


@pytest.mark.parametrize("csr", [b"\x00", b"garbage", b"\x30\x82\x01\x00"])
def test_malformed_der(certifier: Certifier, csr: bytes) -> None:
    refusal = refusal_of(certifier.check_request, IDENTITY, TOKEN, csr, issuer_ready=True)
    assert (refusal.status, refusal.reason) == (Status.INVALID_ARGUMENT, Reason.MALFORMED_CSR)


def test_pem_csr_is_refused_like_linkerd(certifier: Certifier) -> None:
    """The wire carries DER; a PEM CSR is malformed input, not silently accepted."""
    from gossamer_tls import csr_der_to_pem

    pem = csr_der_to_pem(build_csr(generate_private_key(), IDENTITY))
    refusal = refusal_of(certifier.check_request, IDENTITY, TOKEN, pem, issuer_ready=True)
    assert refusal.reason is Reason.MALFORMED_CSR


def _csr_signed_by(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
) -> bytes:
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, IDENTITY)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(IDENTITY)]), critical=False)
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    "key",
    [
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP384R1()),
        ed25519.Ed25519PrivateKey.generate(),
    ],
    ids=["rsa", "p384", "ed25519"],
)
def test_wrong_key_type(
    certifier: Certifier,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
) -> None:
    refusal = refusal_of(
        certifier.check_request, IDENTITY, TOKEN, _csr_signed_by(key), issuer_ready=True
    )
    assert (refusal.status, refusal.reason) == (Status.FAILED_PRECONDITION, Reason.UNSUPPORTED_KEY)


def test_bad_csr_signature(certifier: Certifier) -> None:
    csr = bytearray(build_csr(generate_private_key(), IDENTITY))
    csr[-3] ^= 1
    refusal = refusal_of(certifier.check_request, IDENTITY, TOKEN, bytes(csr), issuer_ready=True)
    assert (refusal.status, refusal.reason) == (Status.INVALID_ARGUMENT, Reason.BAD_CSR_SIGNATURE)


def test_csr_for_another_identity(certifier: Certifier) -> None:
    other = "db.emojivoto.serviceaccount.identity.gossamer.cluster.local"
    csr = build_csr(generate_private_key(), other)
    refusal = refusal_of(certifier.check_request, IDENTITY, TOKEN, csr, issuer_ready=True)
    assert (refusal.status, refusal.reason) == (
        Status.FAILED_PRECONDITION,
        Reason.CSR_NAME_MISMATCH,
    )


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            "[invalid bearer token, square/go-jose: error in cryptographic primitive]",
            Reason.INVALID_TOKEN,
        ),
        ("[invalid bearer token, service account token has expired]", Reason.EXPIRED_TOKEN),
        (
            '[invalid bearer token, token audiences ["other"] is invalid for the target '
            'audiences ["identity.l5d.io"]]',
            Reason.WRONG_AUDIENCE,
        ),
    ],
)
def test_review_errors(certifier: Certifier, error: str, reason: Reason) -> None:
    pending = certifier.check_request(
        IDENTITY, TOKEN, build_csr(generate_private_key(), IDENTITY), issuer_ready=True
    )
    refusal = refusal_of(
        certifier.authorize, pending, Review(authenticated=False, username="", error=error)
    )
    assert (refusal.status, refusal.reason) == (Status.INVALID_ARGUMENT, reason)


def test_review_error_never_echoes_the_token(certifier: Certifier) -> None:
    pending = certifier.check_request(
        IDENTITY, TOKEN, build_csr(generate_private_key(), IDENTITY), issuer_ready=True
    )
    refusal = refusal_of(
        certifier.authorize,
        pending,
        Review(authenticated=False, error=f"bad token {TOKEN.decode()}"),
    )
    assert TOKEN.decode() not in refusal.message
    assert "[REDACTED]" in refusal.message


def test_legacy_audience_fallback_only_when_enabled() -> None:
    config = CertifyConfig(
        control_plane_namespace="gossamer",
        trust_domain="cluster.local",
        legacy_audience_fallback=True,
    )
    certifier = Certifier(config)
    pending = certifier.check_request(
        IDENTITY, TOKEN, build_csr(generate_private_key(), IDENTITY), issuer_ready=True
    )
    wrong = Review(authenticated=False, username="", error='token audiences ["api"] is invalid')
    verdict = certifier.authorize(pending, wrong)
    assert isinstance(verdict, RetryWithoutAudiences)
    assert verdict.pending.audiences == ()
    # The retry itself is judged normally, and never retried again.
    refusal = refusal_of(certifier.authorize, verdict.pending, wrong)
    assert refusal.reason is Reason.WRONG_AUDIENCE
    assert certifier.authorize(
        verdict.pending, Review(audiences=("https://kubernetes.default.svc",))
    ) == Authorized(IDENTITY, USERNAME)


def test_unauthenticated(certifier: Certifier) -> None:
    pending = certifier.check_request(
        IDENTITY, TOKEN, build_csr(generate_private_key(), IDENTITY), issuer_ready=True
    )
    refusal = refusal_of(certifier.authorize, pending, Review(authenticated=False, username=""))
    assert (refusal.status, refusal.reason) == (Status.FAILED_PRECONDITION, Reason.UNAUTHENTICATED)


def test_audience_not_granted(certifier: Certifier) -> None:
    pending = certifier.check_request(
        IDENTITY, TOKEN, build_csr(generate_private_key(), IDENTITY), issuer_ready=True
    )
    refusal = refusal_of(certifier.authorize, pending, Review(audiences=("something-else",)))
    assert refusal.reason is Reason.WRONG_AUDIENCE


@pytest.mark.parametrize(
    "username", ["admin", "system:node:kwok-node", "system:serviceaccount:Emoji:web"]
)
def test_username_that_is_not_a_service_account(certifier: Certifier, username: str) -> None:
    pending = certifier.check_request(
        IDENTITY, TOKEN, build_csr(generate_private_key(), IDENTITY), issuer_ready=True
    )
    refusal = refusal_of(certifier.authorize, pending, Review(username=username))
    assert refusal.status is Status.FAILED_PRECONDITION
    assert refusal.reason in (Reason.INVALID_USERNAME, Reason.IDENTITY_MISMATCH)


def test_token_of_another_service_account(certifier: Certifier) -> None:
    pending = certifier.check_request(
        IDENTITY, TOKEN, build_csr(generate_private_key(), IDENTITY), issuer_ready=True
    )
    refusal = refusal_of(
        certifier.authorize, pending, Review(username="system:serviceaccount:emojivoto:db")
    )
    assert (refusal.status, refusal.reason) == (
        Status.FAILED_PRECONDITION,
        Reason.IDENTITY_MISMATCH,
    )
    assert "db.emojivoto.serviceaccount" in refusal.message


def test_identity_of_another_control_plane(certifier: Certifier) -> None:
    foreign = "web.emojivoto.serviceaccount.identity.linkerd.cluster.local"
    pending = certifier.check_request(
        foreign, TOKEN, build_csr(generate_private_key(), foreign), issuer_ready=True
    )
    refusal = refusal_of(certifier.authorize, pending, Review())
    assert refusal.reason is Reason.IDENTITY_MISMATCH


def test_review_failure_is_internal(certifier: Certifier) -> None:
    refusal = certifier.review_failed("connection refused")
    assert (refusal.status, refusal.reason) == (Status.INTERNAL, Reason.TOKEN_REVIEW_FAILED)


def test_sign_without_issuer_or_with_expired_issuer(certifier: Certifier) -> None:
    pending = certifier.check_request(
        IDENTITY, TOKEN, build_csr(generate_private_key(), IDENTITY), issuer_ready=True
    )
    verdict = certifier.authorize(pending, Review())
    assert isinstance(verdict, Authorized)
    refusal = refusal_of(certifier.sign, pending, verdict, None, now=NOW)
    assert refusal.status is Status.UNAVAILABLE
    anchor = create_trust_anchor(common_name="root", now=NOW)
    short = create_issuer(anchor, common_name="identity", now=NOW, lifetime=dt.timedelta(hours=1))
    refusal = refusal_of(
        certifier.sign,
        pending,
        verdict,
        Issuer(short.certificate, short.private_key),
        now=NOW + dt.timedelta(hours=2),
    )
    assert (refusal.status, refusal.reason) == (Status.UNKNOWN, Reason.ISSUER_INVALID)


def test_sign_refuses_mismatched_authorization(certifier: Certifier, issuer: Issuer) -> None:
    pending = certifier.check_request(
        IDENTITY, TOKEN, build_csr(generate_private_key(), IDENTITY), issuer_ready=True
    )
    with pytest.raises(ValueError, match="different identity"):
        certifier.sign(pending, Authorized("other", USERNAME), issuer, now=NOW)
