from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from gossamer_tls import (
    KeyMaterialError,
    PemError,
    TrustMaterial,
    UnsupportedKeyError,
    certificate_to_der,
    certificates_to_pem,
    generate_private_key,
    load_certificate,
    load_certificates,
    load_private_key,
    private_key_to_der,
    private_key_to_pem,
    trust_root_sha256,
)


def test_bundle_round_trip_keeps_order(trust: TrustMaterial) -> None:
    certs = [trust.issuer.certificate, trust.trust_anchor.certificate]
    bundle = certificates_to_pem(certs)
    assert load_certificates(bundle) == certs
    assert load_certificates(bundle.decode()) == certs


def test_single_der_certificate(trust: TrustMaterial) -> None:
    der = certificate_to_der(trust.trust_anchor.certificate)
    assert load_certificate(der) == trust.trust_anchor.certificate
    assert load_certificates(der) == [trust.trust_anchor.certificate]


def test_comments_between_blocks_are_ignored(trust: TrustMaterial) -> None:
    pem = b"# the root\n" + certificates_to_pem([trust.trust_anchor.certificate]) + b"trailer\n"
    assert load_certificates(pem) == [trust.trust_anchor.certificate]


def test_load_certificate_wants_exactly_one(trust: TrustMaterial) -> None:
    bundle = certificates_to_pem([trust.issuer.certificate, trust.trust_anchor.certificate])
    with pytest.raises(PemError, match="exactly one certificate, found 2"):
        load_certificate(bundle)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"not a certificate", "not a valid DER"),
        (b"\x30\x03\x02\x01\x01", "not a valid DER"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n", "no matching END"),
        (b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "not valid base64"),
        (b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", "is empty"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "block 1"),
    ],
)
def test_malformed_certificates(data: bytes, message: str) -> None:
    with pytest.raises(PemError, match=message):
        load_certificates(data)


def test_wrong_block_type_is_named(trust: TrustMaterial) -> None:
    bundle = certificates_to_pem([trust.trust_anchor.certificate]) + private_key_to_pem(
        trust.issuer.private_key
    )
    with pytest.raises(PemError, match="block 2 is 'PRIVATE KEY'"):
        load_certificates(bundle)


def test_truncated_der_in_second_block(trust: TrustMaterial) -> None:
    der = certificate_to_der(trust.issuer.certificate)[:-20]
    body = base64.b64encode(der).decode()
    broken = f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n".encode()
    with pytest.raises(PemError, match="block 2"):
        load_certificates(certificates_to_pem([trust.trust_anchor.certificate]) + broken)


def test_private_key_encodings_round_trip() -> None:
    key = generate_private_key()
    expected = key.private_numbers()
    sec1 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    for data in (private_key_to_pem(key), private_key_to_der(key), sec1):
        assert load_private_key(data).private_numbers() == expected


@pytest.mark.parametrize(
    ("key", "found"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RSA-2048"),
        (ec.generate_private_key(ec.SECP384R1()), "ECDSA secp384r1"),
        (ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
    ],
)
def test_private_key_wrong_type(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, found: str
) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(UnsupportedKeyError, match=f"must be ECDSA P-256, got {found}"):
        load_private_key(pem)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"garbage", "not a"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "found 0"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n", "no matching END"),
    ],
)
def test_private_key_malformed(data: bytes, message: str) -> None:
    with pytest.raises(KeyMaterialError, match=message):
        load_private_key(data)


def test_encrypted_private_key_is_refused() -> None:
    pem = generate_private_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(KeyMaterialError, match="encrypted"):
        load_private_key(pem)


def test_trust_root_sha256_is_over_the_exact_text(trust: TrustMaterial) -> None:
    pem = certificates_to_pem([trust.trust_anchor.certificate])
    assert trust_root_sha256(pem) == hashlib.sha256(pem).hexdigest()
    assert trust_root_sha256(pem.decode()) == trust_root_sha256(pem)
    assert trust_root_sha256(pem + b"\n") != trust_root_sha256(pem)
