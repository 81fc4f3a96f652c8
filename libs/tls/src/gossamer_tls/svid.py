"""X.509-SVIDs: a leaf certificate whose identity is one SPIFFE ID as a URI SAN.

A proxy outside Kubernetes (an ExternalWorkload) cannot ask the identity service for a
certificate: it has no service-account token, and its identity is a SPIFFE URI, not a
``…serviceaccount.identity…`` DNS name. In Linkerd a SPIRE agent hands it an SVID; here the
mesh issuer can sign one (:func:`issue_svid`), which the proxy then loads from files
(``GOSSAMER_PROXY_IDENTITY_CERT_FILE`` / ``…_KEY_FILE``), as it would files that a SPIFFE
helper writes. The leaf follows the X.509-SVID rules: exactly one URI SAN (critical, since
the subject is empty), not a CA, digitalSignature + keyEncipherment, serverAuth +
clientAuth, and never outliving its issuer.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gossamer_tls.authority import DEFAULT_CLOCK_SKEW, DEFAULT_LEAF_LIFETIME, CertifiedKey
from gossamer_tls.errors import CertificateError
from gossamer_tls.keys import generate_private_key, require_p256_private_key
from gossamer_tls.leaf import LEAF_EXTENDED_KEY_USAGE, LEAF_KEY_USAGE

__all__ = ["Svid", "issue_svid", "spiffe_id_of"]


class Svid:
    """A key and its certificate chain (leaf, then issuer) as PEM."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, chain: list[x509.Certificate]) -> None:
        self.key = key
        self.chain = chain

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)


def _check_spiffe_id(spiffe_id: str) -> None:
    parts = urlsplit(spiffe_id)
    if (
        parts.scheme != "spiffe"
        or not parts.netloc
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or ":" in parts.netloc
        or not spiffe_id.isascii()
        or len(spiffe_id) > 2048
    ):
        raise CertificateError(f"{spiffe_id!r} is not a SPIFFE ID (spiffe://<trust-domain>/…)")


def issue_svid(
    issuer: CertifiedKey,
    spiffe_id: str,
    *,
    now: dt.datetime,
    lifetime: dt.timedelta = DEFAULT_LEAF_LIFETIME,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> Svid:
    """An X.509-SVID for ``spiffe_id`` signed by ``issuer`` (a fresh P-256 key unless given)."""
    _check_spiffe_id(spiffe_id)
    key = require_p256_private_key(key or generate_private_key(), what="SVID key")
    issuer_key = require_p256_private_key(issuer.private_key, what="issuer key")
    now = now.astimezone(dt.UTC)
    not_after = min(now + lifetime + DEFAULT_CLOCK_SKEW, issuer.certificate.not_valid_after_utc)
    if not_after <= now:
        raise CertificateError("the issuer has expired: no SVID can be valid")
    try:
        ski = issuer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DEFAULT_CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(LEAF_KEY_USAGE, critical=True)
        .add_extension(LEAF_EXTENDED_KEY_USAGE, critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return Svid(key, [certificate, issuer.certificate])


def spiffe_id_of(certificate: x509.Certificate) -> str:
    """The one SPIFFE ID (URI SAN) of an X.509-SVID; :class:`CertificateError` otherwise."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateError("the certificate has no subjectAltName") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1 or not uris[0].startswith("spiffe://"):
        raise CertificateError(f"an X.509-SVID has exactly one spiffe:// URI SAN, not {uris}")
    return uris[0]
