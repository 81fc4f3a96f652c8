"""Hypothesis fuzzing of every path that parses untrusted bytes: CSR DER, certificates, keys.

Contract: whatever the bytes, Certify's local checks either accept the request or raise a
:class:`Refusal` with a client-error status; the PEM/DER helpers raise only their typed errors.
About 11k cases in total; ``database=None`` keeps runs reproducible and the tree clean.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from gossamer_identity.certify import Certifier, CertifyConfig, PendingCertify, Refusal, Status
from gossamer_tls import (
    KeyMaterialError,
    PemError,
    TlsError,
    build_csr,
    certificate_to_der,
    certificates_to_pem,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    load_certificates,
    load_private_key,
    private_key_to_der,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
IDENTITY = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"
TOKEN = b"header.payload.signature"
CLIENT_ERRORS = {Status.INVALID_ARGUMENT, Status.FAILED_PRECONDITION, Status.RESOURCE_EXHAUSTED}

CERTIFIER = Certifier(
    CertifyConfig(control_plane_namespace="gossamer", trust_domain="cluster.local")
)
VALID_CSR = build_csr(generate_private_key(), IDENTITY)
TRUST = generate_trust_anchor_and_issuer(
    trust_domain="cluster.local", control_plane_namespace="gossamer", now=NOW
)
VALID_CERT = certificate_to_der(TRUST.issuer.certificate)
VALID_KEY = private_key_to_der(TRUST.issuer.private_key)

FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check(identity: str, token: bytes, csr: bytes) -> PendingCertify | Refusal:
    try:
        return CERTIFIER.check_request(identity, token, csr, issuer_ready=True)
    except Refusal as refusal:
        return refusal


def certify_locally(identity: str, token: bytes, csr: bytes) -> None:
    outcome = check(identity, token, csr)
    if isinstance(outcome, Refusal):
        assert outcome.status in CLIENT_ERRORS, outcome
        assert outcome.message
    else:
        assert outcome.identity == identity


def parse_error(parse: Callable[[bytes], object], data: bytes) -> TlsError | None:
    try:
        parse(data)
    except TlsError as exc:
        return exc
    return None


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """A valid encoding with bit flips, byte overwrites, truncation, insertion or deletion."""
    data = bytearray(original)
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        if not data:
            break
        at = draw(st.integers(min_value=0, max_value=len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif kind == "set":
            data[at] = draw(st.integers(min_value=0, max_value=255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at : at + draw(st.integers(min_value=1, max_value=8))]
    return bytes(data)


@settings(FUZZ, max_examples=3000)
@given(st.binary(max_size=2048))
def test_random_bytes_as_csr(csr: bytes) -> None:
    certify_locally(IDENTITY, TOKEN, csr)


@settings(FUZZ, max_examples=4000)
@given(mutated(VALID_CSR))
def test_mutated_csr_der(csr: bytes) -> None:
    certify_locally(IDENTITY, TOKEN, csr)


@settings(FUZZ, max_examples=1000)
@given(st.text(max_size=300), st.binary(max_size=256))
def test_random_identity_and_token(identity: str, token: bytes) -> None:
    certify_locally(identity, token, VALID_CSR)


@settings(FUZZ, max_examples=300)
@given(
    st.lists(st.from_regex(r"[a-z0-9]{1,12}(\.[a-z0-9]{1,12}){0,8}", fullmatch=True), max_size=3),
    st.sampled_from([IDENTITY, "", "other"]),
)
def test_structured_csrs_with_arbitrary_names(sans: list[str], common_name: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False
        )
    der = builder.sign(generate_private_key(), hashes.SHA256()).public_bytes(
        serialization.Encoding.DER
    )
    outcome = check(IDENTITY, TOKEN, der)
    if isinstance(outcome, Refusal):
        assert outcome.status is Status.FAILED_PRECONDITION
        return
    assert sans == [IDENTITY]
    assert common_name in ("", IDENTITY)


@settings(FUZZ, max_examples=1500)
@given(st.one_of(st.binary(max_size=1024), mutated(VALID_CERT)))
def test_certificate_der_parsing(data: bytes) -> None:
    error = parse_error(load_certificates, data)
    assert error is None or (isinstance(error, PemError) and str(error))


@settings(FUZZ, max_examples=500)
@given(mutated(certificates_to_pem([TRUST.issuer.certificate, TRUST.trust_anchor.certificate])))
def test_certificate_pem_bundle_parsing(data: bytes) -> None:
    error = parse_error(load_certificates, data)
    assert error is None or (isinstance(error, PemError) and str(error))


@settings(FUZZ, max_examples=1000)
@given(st.one_of(st.binary(max_size=512), mutated(VALID_KEY)))
def test_private_key_parsing(data: bytes) -> None:
    error = parse_error(load_private_key, data)
    assert error is None or (isinstance(error, KeyMaterialError) and str(error))
