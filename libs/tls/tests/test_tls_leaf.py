"""The template leaf path (gossamer_tls.leaf, gossamer_tls.der) against cryptography's builder.

The fast path must produce exactly the bytes ``CertificateBuilder`` produces for the same fields,
so these tests build the reference with the builder and compare the TBS bytes one to one.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from gossamer_tls import (
    CertificateError,
    CsrSignatureError,
    Issuer,
    TrustMaterial,
    check_csr,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    load_csr,
)
from gossamer_tls import der as der_encoding
from gossamer_tls.leaf import identity_parts
from gossamer_tls.names import identity_subject

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
IDENTITY = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"


def reference_tbs(
    trust: TrustMaterial,
    public_key: ec.EllipticCurvePublicKey,
    identity: str,
    *,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> bytes:
    """The leaf as cryptography's CertificateBuilder writes it (the pre-template code path)."""
    issuer = trust.issuer.certificate
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    subject = identity_subject(identity)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(identity)]), critical=len(subject) == 0
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    return builder.sign(trust.issuer.private_key, hashes.SHA256()).tbs_certificate_bytes


def make_issuer(trust: TrustMaterial) -> Issuer:
    return Issuer(certificate=trust.issuer.certificate, private_key=trust.issuer.private_key)


@pytest.mark.parametrize(
    "identity",
    [
        IDENTITY,
        "a.b.serviceaccount.identity.gossamer.cluster.local",
        # Longer than a commonName: empty subject and a critical SAN.
        "a-very-long-service-account-name.some-namespace.serviceaccount.identity.gossamer."
        "cluster.local",
    ],
)
@pytest.mark.parametrize(
    "now",
    [
        NOW.replace(microsecond=123456),
        # A notAfter in 2050 or later must switch from UTCTime to GeneralizedTime.
        dt.datetime(2049, 12, 31, 12, 0, tzinfo=dt.UTC),
    ],
)
def test_leaf_matches_builder_byte_for_byte(identity: str, now: dt.datetime) -> None:
    trust = generate_trust_anchor_and_issuer(
        trust_domain="cluster.local", control_plane_namespace="gossamer", now=now
    )
    lifetime = dt.timedelta(days=2)
    issuer = Issuer(
        certificate=trust.issuer.certificate,
        private_key=trust.issuer.private_key,
        ceiling=trust.trust_anchor.certificate.not_valid_after_utc,
    )
    key = generate_private_key().public_key()
    serial = (1 << 158) | 0x80  # top bit of a byte set: exercises the INTEGER sign octet
    issued = issuer.sign_leaf(key, identity, now=now, lifetime=lifetime, serial_number=serial)
    skew = dt.timedelta(seconds=20)
    expected = reference_tbs(
        trust,
        key,
        identity,
        serial=serial,
        not_before=max(now - skew, trust.issuer.certificate.not_valid_before_utc),
        not_after=min(now + lifetime + skew, issuer.not_after),
    )
    assert issued.certificate.tbs_certificate_bytes == expected
    assert issued.leaf_der == issued.certificate.public_bytes(serialization.Encoding.DER)
    trust.issuer.private_key.public_key().verify(
        issued.certificate.signature,
        issued.certificate.tbs_certificate_bytes,
        ec.ECDSA(hashes.SHA256()),
    )
    assert issued.valid_until == issued.certificate.not_valid_after_utc


def test_der_times() -> None:
    """RFC 5280: UTCTime through 2049, GeneralizedTime after; sub-second parts dropped."""
    encoded = der_encoding.time(dt.datetime(2051, 1, 2, 3, 4, 5, 999, tzinfo=dt.UTC))
    assert encoded == b"\x18\x0f20510102030405Z"
    assert der_encoding.time(dt.datetime(2049, 1, 2, 3, 4, 5, tzinfo=dt.UTC)) == (
        b"\x17\x0d490102030405Z"
    )


@pytest.mark.parametrize(
    ("size", "encoded"),
    [(0, b"\x00"), (127, b"\x7f"), (128, b"\x81\x80"), (255, b"\x81\xff"), (256, b"\x82\x01\x00")],
)
def test_der_lengths(size: int, encoded: bytes) -> None:
    assert der_encoding.length(size) == encoded


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x02\x01\x00"), (127, b"\x02\x01\x7f"), (128, b"\x02\x02\x00\x80"),
     (0x7FFF, b"\x02\x02\x7f\xff"), (0xFF00, b"\x02\x03\x00\xff\x00")],
)  # fmt: skip
def test_der_integers(value: int, encoded: bytes) -> None:
    assert der_encoding.integer(value) == encoded


def test_der_refuses_negative_values() -> None:
    with pytest.raises(ValueError, match="negative"):
        der_encoding.integer(-1)
    with pytest.raises(ValueError, match="negative"):
        der_encoding.length(-1)


def test_non_ascii_identity_is_refused(trust: TrustMaterial) -> None:
    with pytest.raises(CertificateError, match="not an ASCII DNS name"):
        make_issuer(trust).sign_leaf(
            generate_private_key().public_key(), "wéb.ns.serviceaccount.identity.x.y", now=NOW
        )


def test_refused_identities_are_refused_every_time() -> None:
    # The per-identity encoding is cached; a refusal must not be (nor a success stand in for it).
    for _ in range(2):
        with pytest.raises(CertificateError, match="ASCII"):
            identity_parts("wéb.ns.serviceaccount.identity.gossamer.cluster.local")
    assert identity_parts(IDENTITY) is identity_parts(IDENTITY)


def test_empty_identity_is_refused(trust: TrustMaterial) -> None:
    with pytest.raises(CertificateError, match="not an ASCII DNS name"):
        make_issuer(trust).sign_leaf(generate_private_key().public_key(), "", now=NOW)


def test_issuer_name_comes_from_the_issuer_certificate(trust: TrustMaterial) -> None:
    issued = make_issuer(trust).sign_leaf(generate_private_key().public_key(), IDENTITY, now=NOW)
    assert issued.certificate.issuer == trust.issuer.certificate.subject
    assert issued.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        IDENTITY
    )


def _csr(
    key: ec.EllipticCurvePrivateKey, algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512
) -> bytes:
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(identity_subject(IDENTITY))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(IDENTITY)]), critical=False)
    )
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("algorithm", [hashes.SHA256(), hashes.SHA384(), hashes.SHA512()])
def test_csr_signed_with_any_ecdsa_sha2_hash_is_accepted(
    algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512,
) -> None:
    key = generate_private_key()
    checked = check_csr(load_csr(_csr(key, algorithm)), IDENTITY)
    assert checked.public_key.public_numbers() == key.public_key().public_numbers()


def test_csr_with_unsupported_signature_algorithm_is_refused() -> None:
    """ecdsa-with-SHA224 (same OID length as SHA-256): refused by name, as Go's x509 does."""
    der = _csr(generate_private_key(), hashes.SHA256())
    sha256_oid = bytes.fromhex("06082a8648ce3d040302")
    assert der.count(sha256_oid) == 1
    tampered = der.replace(sha256_oid, bytes.fromhex("06082a8648ce3d040301"))
    with pytest.raises(CsrSignatureError, match=r"1\.2\.840\.10045\.4\.3\.1 is not ECDSA"):
        check_csr(load_csr(tampered), IDENTITY)
