from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from gossamer_tls import (
    CsrNameError,
    CsrSignatureError,
    MalformedCsrError,
    UnsupportedKeyError,
    build_csr,
    check_csr,
    csr_der_to_pem,
    generate_private_key,
    load_csr,
)

IDENTITY = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"
SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def make_csr(
    key: SigningKey,
    *,
    common_name: str | None = IDENTITY,
    sans: list[x509.GeneralName] | None = None,
) -> bytes:
    attributes = (
        [] if common_name is None else [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    if sans is None:
        sans = [x509.DNSName(IDENTITY)]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)


def test_built_csr_passes_checks() -> None:
    key = generate_private_key()
    der = build_csr(key, IDENTITY)
    checked = check_csr(load_csr(der), IDENTITY)
    assert checked.identity == IDENTITY
    assert checked.public_key.public_numbers() == key.public_key().public_numbers()


def test_pem_csr_accepted_when_allowed() -> None:
    der = build_csr(generate_private_key(), IDENTITY)
    assert load_csr(csr_der_to_pem(der)).public_bytes(serialization.Encoding.DER) == der
    with pytest.raises(MalformedCsrError):
        load_csr(csr_der_to_pem(der), allow_pem=False)


def test_csr_without_common_name_is_accepted() -> None:
    check_csr(load_csr(make_csr(generate_private_key(), common_name=None)), IDENTITY)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\x30\x82\xff\xff", b"hello world", b"-----BEGIN CERTIFICATE REQUEST-----\n"],
)
def test_malformed_csr(data: bytes) -> None:
    with pytest.raises(MalformedCsrError):
        load_csr(data)


def test_truncated_csr() -> None:
    der = build_csr(generate_private_key(), IDENTITY)
    with pytest.raises(MalformedCsrError, match="not valid DER"):
        load_csr(der[:-5])


@pytest.mark.parametrize(
    ("key", "found"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RSA-2048"),
        (ec.generate_private_key(ec.SECP384R1()), "ECDSA secp384r1"),
        (ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
    ],
)
def test_wrong_key_types_refused(key: SigningKey, found: str) -> None:
    with pytest.raises(UnsupportedKeyError, match=f"got {found}"):
        check_csr(load_csr(make_csr(key)), IDENTITY)


def test_tampered_signature_refused() -> None:
    der = bytearray(build_csr(generate_private_key(), IDENTITY))
    der[-3] ^= 0x01  # inside the signature's integer
    with pytest.raises(CsrSignatureError):
        check_csr(load_csr(bytes(der)), IDENTITY)


def test_csr_with_swapped_public_key_refused() -> None:
    """A request whose body names another key than the one that signed it."""
    signer, other = generate_private_key(), generate_private_key()
    good = load_csr(build_csr(signer, IDENTITY))
    other_spki = other.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signer_spki = signer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = good.public_bytes(serialization.Encoding.DER).replace(signer_spki, other_spki)
    with pytest.raises(CsrSignatureError):
        check_csr(load_csr(der), IDENTITY)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sans": []}, "no subjectAltName"),
        (
            {
                "sans": [
                    x509.DNSName("other.emojivoto.serviceaccount.identity.gossamer.cluster.local")
                ]
            },
            "does not match",
        ),
        (
            {"sans": [x509.DNSName(IDENTITY), x509.DNSName("evil.example.com")]},
            "exactly one DNS SAN, it has 2",
        ),
        (
            {"sans": [x509.DNSName(IDENTITY), x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]},
            "IPAddress",
        ),
        ({"sans": [x509.DNSName(IDENTITY), x509.RFC822Name("a@example.com")]}, "RFC822Name"),
        (
            {"sans": [x509.DNSName(IDENTITY), x509.UniformResourceIdentifier("spiffe://x/y")]},
            "UniformResourceIdentifier",
        ),
        ({"common_name": "someone-else"}, "common name"),
    ],
)
def test_name_checks(kwargs: dict[str, object], message: str) -> None:
    der = make_csr(generate_private_key(), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(CsrNameError, match=message):
        check_csr(load_csr(der), IDENTITY)


def test_csr_with_unknown_version_is_malformed() -> None:
    """Found by fuzzing: cryptography raises InvalidVersion, which is not a ValueError."""
    der = build_csr(generate_private_key(), IDENTITY)
    bumped = der.replace(b"\x02\x01\x00", b"\x02\x01\x01", 1)
    with pytest.raises(MalformedCsrError, match="not a valid CSR version"):
        load_csr(bumped)
