"""Leaf certificates assembled from a per-issuer template: the identity service's hot path.

Why: every Certify call signs one leaf, and ``cryptography``'s ``CertificateBuilder`` spends far
more time re-encoding the issuer name and the constant extensions from Python objects than the
ECDSA signature takes. Everything that depends only on the issuer (its subject, the
authority key identifier, basicConstraints, keyUsage, extKeyUsage, the signature algorithm) is
encoded once, when the issuer is loaded; per leaf only the serial, validity, subject, SAN,
public key and subject key identifier are encoded, and the TBS bytes are signed directly with
the issuer key. The result is byte-for-byte what the builder produces for the same inputs
(``test_tls_leaf.py`` checks this), parsed back with ``cryptography`` before it is returned.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from gossamer_tls import der
from gossamer_tls.errors import CertificateError
from gossamer_tls.names import MAX_COMMON_NAME_LENGTH

VERSION_3 = b"\xa0\x03\x02\x01\x02"
"""``[0] EXPLICIT Version`` with value v3 (2)."""
ECDSA_WITH_SHA256 = der.tlv(der.SEQUENCE, b"\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02")
"""AlgorithmIdentifier for ecdsa-with-SHA256 (1.2.840.10045.4.3.2), parameters absent."""
P256_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")
"""SubjectPublicKeyInfo of an id-ecPublicKey/prime256v1 key, up to the 65-byte point."""
COMMON_NAME_OID = b"\x06\x03\x55\x04\x03"
UTF8_STRING = 0x0C

OID_BASIC_CONSTRAINTS = b"\x06\x03\x55\x1d\x13"
OID_KEY_USAGE = b"\x06\x03\x55\x1d\x0f"
OID_EXTENDED_KEY_USAGE = b"\x06\x03\x55\x1d\x25"
OID_SUBJECT_ALT_NAME = b"\x06\x03\x55\x1d\x11"
OID_SUBJECT_KEY_ID = b"\x06\x03\x55\x1d\x0e"
OID_AUTHORITY_KEY_ID = b"\x06\x03\x55\x1d\x23"

LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
"""digitalSignature + keyEncipherment, as Linkerd's issuer writes them."""
LEAF_EXTENDED_KEY_USAGE = x509.ExtendedKeyUsage(
    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
)


_SUBJECT_KEY_ID_TEMPLATE = der.extension(
    OID_SUBJECT_KEY_ID, b"\x04\x14" + bytes(20), critical=False
)
SUBJECT_KEY_ID_PREFIX = _SUBJECT_KEY_ID_TEMPLATE[:-20]
"""The subjectKeyIdentifier extension up to its 20-byte SHA-1 key identifier."""
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())  # stateless: one instance serves every signature
IDENTITY_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=IDENTITY_CACHE_SIZE)
def identity_parts(identity: str) -> tuple[bytes, bytes]:
    """``(subject, subjectAltName extension)`` of a leaf for ``identity``, encoded once per name.

    Renewals ask for the same identities again and again; the cache is bounded, and a name
    that is refused raises every time (errors are not cached).
    """
    if not identity or not identity.isascii():
        raise CertificateError(f"leaf identity {identity!r} is not an ASCII DNS name")
    san = der.tlv(der.SEQUENCE, der.tlv(der.CONTEXT_DNS_NAME, identity.encode("ascii")))
    # With an empty subject the SAN carries the identity alone and must be critical.
    critical = len(identity) > MAX_COMMON_NAME_LENGTH
    return leaf_subject_der(identity), der.extension(OID_SUBJECT_ALT_NAME, san, critical=critical)


def leaf_subject_der(identity: str) -> bytes:
    """The leaf's subject: ``CN=<identity>`` (UTF8String), or empty when too long for a CN."""
    if len(identity) > MAX_COMMON_NAME_LENGTH:
        return der.tlv(der.SEQUENCE, b"")
    attribute = der.tlv(der.SEQUENCE, COMMON_NAME_OID + der.tlv(UTF8_STRING, identity.encode()))
    return der.tlv(der.SEQUENCE, der.tlv(der.SET, attribute))


@dataclass(frozen=True, slots=True)
class LeafTemplate:
    """The issuer-dependent parts of every leaf, encoded once."""

    private_key: ec.EllipticCurvePrivateKey
    issuer_name_der: bytes
    constant_extensions_der: bytes
    """basicConstraints (critical, cA=false) + keyUsage (critical) + extKeyUsage."""
    authority_key_id_der: bytes

    @classmethod
    def for_issuer(
        cls,
        issuer: x509.Certificate,
        private_key: ec.EllipticCurvePrivateKey,
        authority_key_id: x509.AuthorityKeyIdentifier,
    ) -> LeafTemplate:
        constant = (
            der.extension(
                OID_BASIC_CONSTRAINTS,
                x509.BasicConstraints(ca=False, path_length=None).public_bytes(),
                critical=True,
            )
            + der.extension(OID_KEY_USAGE, LEAF_KEY_USAGE.public_bytes(), critical=True)
            + der.extension(
                OID_EXTENDED_KEY_USAGE, LEAF_EXTENDED_KEY_USAGE.public_bytes(), critical=False
            )
        )
        return cls(
            private_key=private_key,
            issuer_name_der=issuer.subject.public_bytes(),
            constant_extensions_der=constant,
            authority_key_id_der=der.extension(
                OID_AUTHORITY_KEY_ID, authority_key_id.public_bytes(), critical=False
            ),
        )

    def tbs_certificate(
        self,
        public_key: ec.EllipticCurvePublicKey,
        identity: str,
        *,
        serial_number: int,
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> bytes:
        """The DER TBSCertificate of a leaf for ``identity`` over the P-256 ``public_key``."""
        if serial_number <= 0:
            raise CertificateError("certificate serial numbers must be positive")
        subject, san_extension = identity_parts(identity)
        point = public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        # RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits, as cryptography does.
        key_id = SUBJECT_KEY_ID_PREFIX + hashlib.sha1(point, usedforsecurity=False).digest()
        extensions = der.tlv(
            der.SEQUENCE,
            self.constant_extensions_der + san_extension + key_id + self.authority_key_id_der,
        )
        return der.tlv(
            der.SEQUENCE,
            VERSION_3
            + der.integer(serial_number)
            + ECDSA_WITH_SHA256
            + self.issuer_name_der
            + der.tlv(der.SEQUENCE, der.time(not_before) + der.time(not_after))
            + subject
            + P256_SPKI_PREFIX
            + point
            + der.tlv(0xA3, extensions),
        )

    def sign(self, tbs_certificate: bytes) -> bytes:
        """Sign ``tbs_certificate`` ECDSA-SHA256 with the issuer key: the certificate's DER."""
        signature = self.private_key.sign(tbs_certificate, _ECDSA_SHA256)
        return der.tlv(
            der.SEQUENCE, tbs_certificate + ECDSA_WITH_SHA256 + der.bit_string(signature)
        )
