from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from gossamer_tls import (
    CertifiedKey,
    ChainError,
    Issuer,
    TrustMaterial,
    create_issuer,
    create_trust_anchor,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    verify_chain,
)

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
IDENTITY = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"
HOUR = dt.timedelta(hours=1)


def leaf_from(
    ca: CertifiedKey, name: str = IDENTITY, *, now: dt.datetime = NOW
) -> x509.Certificate:
    return (
        Issuer(ca.certificate, ca.private_key)
        .sign_leaf(generate_private_key().public_key(), name, now=now)
        .certificate
    )


def plain_certificate(
    parent: CertifiedKey, *, ca: bool | None, key_cert_sign: bool = True
) -> CertifiedKey:
    """A certificate signed by ``parent`` with hand-picked CA-ness, for negative tests."""
    key = generate_private_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not-really-a-ca")]))
        .issuer_name(parent.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - HOUR)
        .not_valid_after(NOW + 100 * HOUR)
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=None), critical=True
        )
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
            crl_sign=False, encipher_only=False, decipher_only=False,
        ),
        critical=True,
    )  # fmt: skip
    return CertifiedKey(builder.sign(parent.private_key, hashes.SHA256()), key)


def signed_leaf_by(parent: CertifiedKey) -> x509.Certificate:
    key = generate_private_key()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, IDENTITY)]))
        .issuer_name(parent.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - HOUR)
        .not_valid_after(NOW + HOUR)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(IDENTITY)]), critical=False)
        .sign(parent.private_key, hashes.SHA256())
    )


def test_valid_chain(trust: TrustMaterial) -> None:
    leaf = leaf_from(trust.issuer)
    chain = verify_chain(
        leaf,
        [trust.issuer.certificate],
        [trust.trust_anchor.certificate],
        now=NOW,
        dns_name=IDENTITY,
    )
    assert chain.path == (leaf, trust.issuer.certificate, trust.trust_anchor.certificate)
    assert chain.leaf == leaf
    assert chain.anchor == trust.trust_anchor.certificate


def test_issuer_verifies_directly_against_anchor(trust: TrustMaterial) -> None:
    chain = verify_chain(trust.issuer.certificate, [], [trust.trust_anchor.certificate], now=NOW)
    assert chain.anchor == trust.trust_anchor.certificate


def test_anchor_is_trusted_as_itself(trust: TrustMaterial) -> None:
    anchor = trust.trust_anchor.certificate
    assert verify_chain(anchor, [], [anchor], now=NOW).path == (anchor,)


def test_extra_and_unordered_intermediates_and_several_anchors(trust: TrustMaterial) -> None:
    other = generate_trust_anchor_and_issuer(
        trust_domain="other.org", control_plane_namespace="x", now=NOW
    )
    leaf = leaf_from(trust.issuer)
    chain = verify_chain(
        leaf,
        [other.issuer.certificate, trust.issuer.certificate],
        [other.trust_anchor.certificate, trust.trust_anchor.certificate],
        now=NOW,
    )
    assert chain.anchor == trust.trust_anchor.certificate


def test_expired_leaf(trust: TrustMaterial) -> None:
    leaf = leaf_from(trust.issuer)
    with pytest.raises(ChainError, match="expired at"):
        verify_chain(
            leaf, [trust.issuer.certificate], [trust.trust_anchor.certificate], now=NOW + 25 * HOUR
        )


def test_not_yet_valid_leaf(trust: TrustMaterial) -> None:
    leaf = leaf_from(trust.issuer)
    with pytest.raises(ChainError, match="not valid until"):
        verify_chain(
            leaf, [trust.issuer.certificate], [trust.trust_anchor.certificate], now=NOW - HOUR
        )


def test_expired_issuer() -> None:
    anchor = create_trust_anchor(common_name="root", now=NOW)
    issuer = create_issuer(anchor, common_name="identity", now=NOW, lifetime=2 * HOUR)
    leaf = leaf_from(issuer)  # clamped to the issuer's expiry
    later = issuer.certificate.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(ChainError, match="expired"):
        verify_chain(issuer.certificate, [], [anchor.certificate], now=later)
    # Even a leaf whose own validity still held could not outlive its issuer.
    assert leaf.not_valid_after_utc == issuer.certificate.not_valid_after_utc


def test_expired_anchor() -> None:
    anchor = create_trust_anchor(common_name="root", now=NOW, lifetime=2 * HOUR)
    issuer = create_issuer(anchor, common_name="identity", now=NOW)
    with pytest.raises(ChainError, match="expired"):
        verify_chain(issuer.certificate, [], [anchor.certificate], now=NOW + 3 * HOUR)


@pytest.mark.parametrize(
    ("ca", "key_cert_sign", "message"),
    [
        (False, True, "cA=false"),
        (None, True, "no basicConstraints"),
        (True, False, "lacks keyCertSign"),
    ],
)
def test_non_ca_issuer(
    trust: TrustMaterial, ca: bool | None, key_cert_sign: bool, message: str
) -> None:
    fake = plain_certificate(trust.trust_anchor, ca=ca, key_cert_sign=key_cert_sign)
    leaf = signed_leaf_by(fake)
    with pytest.raises(ChainError, match=message):
        verify_chain(leaf, [fake.certificate], [trust.trust_anchor.certificate], now=NOW)


def test_chain_to_the_wrong_root(trust: TrustMaterial) -> None:
    other = generate_trust_anchor_and_issuer(
        trust_domain="cluster.local", control_plane_namespace="gossamer", now=NOW
    )
    leaf = leaf_from(trust.issuer)
    # Same names, different keys: the signature check is what catches it.
    with pytest.raises(ChainError, match="does not chain"):
        verify_chain(leaf, [trust.issuer.certificate], [other.trust_anchor.certificate], now=NOW)


def test_missing_intermediate(trust: TrustMaterial) -> None:
    leaf = leaf_from(trust.issuer)
    with pytest.raises(ChainError, match="no trust anchor or intermediate is named"):
        verify_chain(leaf, [], [trust.trust_anchor.certificate], now=NOW)


def test_no_anchors(trust: TrustMaterial) -> None:
    with pytest.raises(ChainError, match="no trust anchors"):
        verify_chain(trust.issuer.certificate, [], [], now=NOW)


def test_wrong_dns_name(trust: TrustMaterial) -> None:
    leaf = leaf_from(trust.issuer)
    with pytest.raises(ChainError, match="not valid for"):
        verify_chain(
            leaf,
            [trust.issuer.certificate],
            [trust.trust_anchor.certificate],
            now=NOW,
            dns_name="other.example",
        )


def test_name_constraints_enforced(trust: TrustMaterial) -> None:
    outside = leaf_from(
        trust.issuer, "web.emojivoto.serviceaccount.identity.elsewhere.cluster.local"
    )
    with pytest.raises(ChainError, match="outside the names permitted"):
        verify_chain(outside, [trust.issuer.certificate], [trust.trust_anchor.certificate], now=NOW)


def test_excluded_name_constraint() -> None:
    anchor = create_trust_anchor(common_name="root", now=NOW)
    key = generate_private_key()
    constrained = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "identity")]))
        .issuer_name(anchor.certificate.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - HOUR)
        .not_valid_after(NOW + 100 * HOUR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=None,
                excluded_subtrees=[
                    x509.DNSName("emojivoto.serviceaccount.identity.gossamer.cluster.local")
                ],
            ),
            critical=True,
        )
        .sign(anchor.private_key, hashes.SHA256())
    )
    leaf = leaf_from(CertifiedKey(constrained, key))
    with pytest.raises(ChainError, match="excluded"):
        verify_chain(leaf, [constrained], [anchor.certificate], now=NOW)


def test_path_length_enforced() -> None:
    anchor = create_trust_anchor(common_name="root", now=NOW, path_length=0)
    issuer = create_issuer(anchor, common_name="identity", now=NOW)
    leaf = leaf_from(issuer)
    with pytest.raises(ChainError, match="allows 0 intermediate"):
        verify_chain(leaf, [issuer.certificate], [anchor.certificate], now=NOW)
    # The issuer itself (no intermediates below the anchor) is fine.
    verify_chain(issuer.certificate, [], [anchor.certificate], now=NOW)


def test_two_level_intermediates() -> None:
    anchor = create_trust_anchor(common_name="root", now=NOW, path_length=2)
    middle = create_issuer(anchor, common_name="middle", now=NOW, path_length=1)
    issuer = create_issuer(middle, common_name="identity", now=NOW)
    leaf = leaf_from(issuer)
    chain = verify_chain(
        leaf, [middle.certificate, issuer.certificate], [anchor.certificate], now=NOW
    )
    assert [c.subject.rfc4514_string() for c in chain.path] == [
        "CN=" + IDENTITY,
        "CN=identity",
        "CN=middle",
        "CN=root",
    ]


def test_rsa_trust_anchor_can_sign_an_issuer() -> None:
    """Anchors from external CAs may be RSA (Linkerd's rsa-ca suite); verification handles them."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rsa-root")])
    rsa_root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rsa_key.public_key())
        .serial_number(7)
        .not_valid_before(NOW - HOUR)
        .not_valid_after(NOW + 1000 * HOUR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .sign(rsa_key, hashes.SHA256())
    )
    issuer_key = generate_private_key()
    issuer = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "identity")]))
        .issuer_name(name)
        .public_key(issuer_key.public_key())
        .serial_number(8)
        .not_valid_before(NOW - HOUR)
        .not_valid_after(NOW + 100 * HOUR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(rsa_key, hashes.SHA256())
    )
    leaf = leaf_from(CertifiedKey(issuer, issuer_key))
    assert verify_chain(leaf, [issuer], [rsa_root], now=NOW).anchor == rsa_root
