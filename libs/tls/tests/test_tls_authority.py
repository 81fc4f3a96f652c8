from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import DNSName
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store
from gossamer_tls import (
    CertificateError,
    CertifiedKey,
    Issuer,
    TrustMaterial,
    UnsupportedKeyError,
    build_csr,
    certificates_to_pem,
    check_csr,
    create_issuer,
    create_trust_anchor,
    generate_private_key,
    load_csr,
    verify_chain,
)

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
IDENTITY = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"


def issue(trust: TrustMaterial, *, now: dt.datetime = NOW, **kwargs: object) -> x509.Certificate:
    issuer = Issuer(trust.issuer.certificate, trust.issuer.private_key)
    key = generate_private_key()
    return issuer.sign_leaf(key.public_key(), IDENTITY, now=now, **kwargs).certificate  # type: ignore[arg-type]


def test_trust_anchor_extensions(trust: TrustMaterial) -> None:
    anchor = trust.trust_anchor.certificate
    assert anchor.subject == anchor.issuer
    assert anchor.subject.rfc4514_string() == "CN=root.gossamer.cluster.local"
    bc = anchor.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    assert bc.value.path_length == 1
    ku = anchor.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign
    assert not ku.value.digital_signature
    ski = anchor.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = anchor.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert isinstance(anchor.public_key(), ec.EllipticCurvePublicKey)
    assert (
        anchor.signature_algorithm_oid.dotted_string == "1.2.840.10045.4.3.2"
    )  # ecdsa-with-SHA256
    assert anchor.not_valid_before_utc <= NOW < anchor.not_valid_after_utc


def test_issuer_extensions(trust: TrustMaterial) -> None:
    issuer = trust.issuer.certificate
    anchor = trust.trust_anchor.certificate
    assert issuer.subject.rfc4514_string() == "CN=identity.gossamer.cluster.local"
    assert issuer.issuer == anchor.subject
    bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    assert bc.value.path_length == 0
    ku = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign
    assert ku.crl_sign
    aki = issuer.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    anchor_ski = anchor.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == anchor_ski.digest
    nc = issuer.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    assert nc.value.permitted_subtrees == [x509.DNSName("identity.gossamer.cluster.local")]
    assert issuer.not_valid_after_utc <= anchor.not_valid_after_utc


def test_issuer_never_outlives_parent() -> None:
    anchor = create_trust_anchor(common_name="root", now=NOW, lifetime=dt.timedelta(days=10))
    issuer = create_issuer(anchor, common_name="identity", now=NOW, lifetime=dt.timedelta(days=365))
    assert issuer.certificate.not_valid_after_utc == anchor.certificate.not_valid_after_utc


def test_leaf_fields(trust: TrustMaterial) -> None:
    issuer = Issuer(trust.issuer.certificate, trust.issuer.private_key)
    key = generate_private_key()
    checked = check_csr(load_csr(build_csr(key, IDENTITY)), IDENTITY)
    issued = issuer.sign_leaf(checked.public_key, IDENTITY, now=NOW)
    leaf = issued.certificate
    assert leaf.subject.rfc4514_string() == f"CN={IDENTITY}"
    assert leaf.issuer == trust.issuer.certificate.subject
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.DNSName(IDENTITY)]
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert not bc.ca
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature
    assert ku.key_encipherment
    assert not ku.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert leaf.not_valid_before_utc == NOW - dt.timedelta(seconds=20)
    assert leaf.not_valid_after_utc == NOW + dt.timedelta(hours=24, seconds=20)
    assert issued.valid_until == leaf.not_valid_after_utc
    assert leaf.serial_number > 0
    assert issued.intermediates_der == (trust.issuer.certificate.public_bytes(Encoding.DER),)
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]


def test_leaf_lifetime_and_skew_are_configurable(trust: TrustMaterial) -> None:
    leaf = issue(trust, lifetime=dt.timedelta(hours=1), clock_skew=dt.timedelta(minutes=1))
    assert leaf.not_valid_before_utc == NOW - dt.timedelta(minutes=1)
    assert leaf.not_valid_after_utc == NOW + dt.timedelta(hours=1, minutes=1)


def test_leaf_clamped_to_issuer_expiry() -> None:
    anchor = create_trust_anchor(common_name="root", now=NOW)
    short = create_issuer(anchor, common_name="identity", now=NOW, lifetime=dt.timedelta(hours=2))
    issuer = Issuer(short.certificate, short.private_key)
    issued = issuer.sign_leaf(
        generate_private_key().public_key(), IDENTITY, now=NOW + dt.timedelta(hours=1)
    )
    assert issued.valid_until == short.certificate.not_valid_after_utc


def test_leaf_clamped_to_ceiling(trust: TrustMaterial) -> None:
    ceiling = NOW + dt.timedelta(hours=3)
    issuer = Issuer(trust.issuer.certificate, trust.issuer.private_key, ceiling=ceiling)
    issued = issuer.sign_leaf(generate_private_key().public_key(), IDENTITY, now=NOW)
    assert issued.valid_until == ceiling


def test_signing_with_expired_issuer_is_refused(trust: TrustMaterial) -> None:
    later = trust.issuer.certificate.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(CertificateError, match="issuer expired"):
        issue(trust, now=later)


def test_naive_now_is_refused(trust: TrustMaterial) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        issue(trust, now=NOW.replace(tzinfo=None))


def test_issuer_key_must_match_certificate(trust: TrustMaterial) -> None:
    with pytest.raises(CertificateError, match="does not match"):
        Issuer(trust.issuer.certificate, generate_private_key())


def test_issuer_must_be_a_ca(trust: TrustMaterial) -> None:
    key = generate_private_key()
    leaf = Issuer(trust.issuer.certificate, trust.issuer.private_key).sign_leaf(
        key.public_key(), IDENTITY, now=NOW
    )
    with pytest.raises(CertificateError, match="not a CA"):
        Issuer(leaf.certificate, key)


def test_leaf_key_must_be_p256(trust: TrustMaterial) -> None:
    issuer = Issuer(trust.issuer.certificate, trust.issuer.private_key)
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(UnsupportedKeyError):
        issuer.sign_leaf(p384, IDENTITY, now=NOW)


def test_rsa_ca_key_refused() -> None:
    anchor = create_trust_anchor(common_name="root", now=NOW)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(UnsupportedKeyError):
        create_issuer(anchor, common_name="i", now=NOW, key=rsa_key)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedKeyError):
        create_issuer(CertifiedKey(anchor.certificate, rsa_key), common_name="i", now=NOW)  # type: ignore[arg-type]


def test_leaf_verifies_with_webpki_style_verifier(trust: TrustMaterial) -> None:
    """cryptography's Rust verifier is webpki-strict, like the proxy; it must accept our leaves."""
    leaf = issue(trust)
    at = NOW + dt.timedelta(hours=1)
    store = Store([trust.trust_anchor.certificate])
    server = PolicyBuilder().store(store).time(at).build_server_verifier(DNSName(IDENTITY))
    assert server.verify(leaf, [trust.issuer.certificate])[-1] == trust.trust_anchor.certificate
    client = PolicyBuilder().store(store).time(at).build_client_verifier()
    assert client.verify(leaf, [trust.issuer.certificate]).subjects == [x509.DNSName(IDENTITY)]
    verify_chain(
        leaf,
        [trust.issuer.certificate],
        [trust.trust_anchor.certificate],
        now=at,
        dns_name=IDENTITY,
    )


def test_leaf_verifies_with_openssl(
    trust: TrustMaterial, tmp_path: Path, require_program: Callable[[str], str]
) -> None:
    openssl = require_program("openssl")
    leaf = issue(trust, now=dt.datetime.now(dt.UTC))
    (tmp_path / "anchor.pem").write_bytes(certificates_to_pem([trust.trust_anchor.certificate]))
    (tmp_path / "issuer.pem").write_bytes(certificates_to_pem([trust.issuer.certificate]))
    (tmp_path / "leaf.pem").write_bytes(certificates_to_pem([leaf]))
    result = subprocess.run(
        [
            openssl, "verify", "-x509_strict", "-purpose", "sslserver",
            "-verify_hostname", IDENTITY,
            "-CAfile", str(tmp_path / "anchor.pem"), "-untrusted", str(tmp_path / "issuer.pem"),
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_identity_longer_than_a_common_name(trust: TrustMaterial) -> None:
    """Real identities easily exceed X.509's 64-character CN limit; the SAN carries them."""
    long_identity = (
        "checkout-service.online-boutique-prod.serviceaccount.identity.gossamer.cluster.local"
    )
    assert len(long_identity) > 64
    key = generate_private_key()
    checked = check_csr(load_csr(build_csr(key, long_identity)), long_identity)
    issuer = Issuer(trust.issuer.certificate, trust.issuer.private_key)
    leaf = issuer.sign_leaf(checked.public_key, long_identity, now=NOW).certificate
    assert len(leaf.subject) == 0
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.DNSName) == [long_identity]
    store = Store([trust.trust_anchor.certificate])
    verifier = PolicyBuilder().store(store).time(NOW).build_server_verifier(DNSName(long_identity))
    verifier.verify(leaf, [trust.issuer.certificate])
