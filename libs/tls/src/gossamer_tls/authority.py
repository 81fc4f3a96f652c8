"""The mesh certificate authority: trust anchors, issuers and the leaves they sign.

Layout follows Linkerd: a long-lived self-signed *trust anchor* (distributed to every proxy) signs
a shorter-lived *issuer* (an intermediate CA held only by the identity service), and the issuer
signs 24-hour *leaf* certificates whose single DNS SAN is a workload identity. All key material is
ECDSA P-256 and every signature is ECDSA-SHA256. Nothing here reads the clock: ``now`` is always a
parameter so tests and the service decide what time it is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gossamer_tls.errors import CertificateError
from gossamer_tls.keys import (
    generate_private_key,
    public_keys_equal,
    require_p256_private_key,
    require_p256_public_key,
)
from gossamer_tls.leaf import LeafTemplate
from gossamer_tls.names import issuer_name
from gossamer_tls.pem import certificate_to_der

DEFAULT_LEAF_LIFETIME = dt.timedelta(hours=24)
"""Linkerd's ``DefaultIssuanceLifetime``."""
DEFAULT_CLOCK_SKEW = dt.timedelta(seconds=20)
"""What Linkerd's Helm chart passes as ``-identity-clock-skew-allowance``."""
DEFAULT_ANCHOR_LIFETIME = dt.timedelta(days=3650)
DEFAULT_ISSUER_LIFETIME = dt.timedelta(days=365)
CA_BACKDATE = dt.timedelta(minutes=5)
"""CAs are backdated a little so that nodes with slightly slow clocks accept them at once."""


def _utc(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (use datetime.now(timezone.utc))")
    return now.astimezone(dt.UTC)


@dataclass(frozen=True, slots=True)
class CertifiedKey:
    """A certificate together with its private key (anchors and issuers as generated)."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class TrustMaterial:
    """What ``gossamer install`` needs: an anchor (key may then be discarded) and an issuer."""

    trust_anchor: CertifiedKey
    issuer: CertifiedKey


def _ca_extensions(
    builder: x509.CertificateBuilder,
    *,
    public_key: ec.EllipticCurvePublicKey,
    path_length: int | None,
    permitted_dns_domains: Sequence[str] | None,
) -> x509.CertificateBuilder:
    builder = (
        builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=path_length), critical=True
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if permitted_dns_domains:
        builder = builder.add_extension(
            x509.NameConstraints(
                permitted_subtrees=[x509.DNSName(d) for d in permitted_dns_domains],
                excluded_subtrees=None,
            ),
            critical=True,
        )
    return builder


def create_trust_anchor(
    *,
    common_name: str,
    now: dt.datetime,
    lifetime: dt.timedelta = DEFAULT_ANCHOR_LIFETIME,
    key: ec.EllipticCurvePrivateKey | None = None,
    path_length: int | None = 1,
    permitted_dns_domains: Sequence[str] | None = None,
) -> CertifiedKey:
    """A self-signed root CA (cA, keyCertSign+cRLSign, SKI; ``path_length`` 1 allows one issuer)."""
    now = _utc(now)
    key = require_p256_private_key(key or generate_private_key(), what="trust anchor key")
    public_key = key.public_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CA_BACKDATE)
        .not_valid_after(now + lifetime)
    )
    builder = _ca_extensions(
        builder,
        public_key=public_key,
        path_length=path_length,
        permitted_dns_domains=permitted_dns_domains,
    )
    # A self-signed root's AKI equals its SKI; webpki-style verifiers accept either presence.
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
    )
    return CertifiedKey(builder.sign(key, hashes.SHA256()), key)


def _authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            require_p256_public_key(issuer.public_key(), what="issuer key")
        )
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def create_issuer(
    parent: CertifiedKey,
    *,
    common_name: str,
    now: dt.datetime,
    lifetime: dt.timedelta = DEFAULT_ISSUER_LIFETIME,
    key: ec.EllipticCurvePrivateKey | None = None,
    path_length: int | None = 0,
    permitted_dns_domains: Sequence[str] | None = None,
) -> CertifiedKey:
    """An intermediate CA signed by ``parent``; its validity never outlives the parent's."""
    now = _utc(now)
    key = require_p256_private_key(key or generate_private_key(), what="issuer key")
    parent_key = require_p256_private_key(parent.private_key, what="parent CA key")
    public_key = key.public_key()
    not_after = min(now + lifetime, parent.certificate.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(parent.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - CA_BACKDATE, parent.certificate.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(_authority_key_identifier(parent.certificate), critical=False)
    )
    builder = _ca_extensions(
        builder,
        public_key=public_key,
        path_length=path_length,
        permitted_dns_domains=permitted_dns_domains,
    )
    return CertifiedKey(builder.sign(parent_key, hashes.SHA256()), key)


def generate_trust_anchor_and_issuer(
    *,
    trust_domain: str,
    control_plane_namespace: str,
    now: dt.datetime,
    anchor_lifetime: dt.timedelta = DEFAULT_ANCHOR_LIFETIME,
    issuer_lifetime: dt.timedelta = DEFAULT_ISSUER_LIFETIME,
    constrain_issuer: bool = True,
) -> TrustMaterial:
    """Fresh trust anchor ``root.<ns>.<td>`` and issuer ``identity.<ns>.<td>`` for an install.

    With ``constrain_issuer`` the issuer carries a critical name constraint permitting only DNS
    names under ``identity.<ns>.<td>``: exactly the identities it exists to sign, so a stolen
    issuer key cannot mint certificates for arbitrary hostnames.
    """
    issuer_cn = issuer_name(
        control_plane_namespace=control_plane_namespace, trust_domain=trust_domain
    )
    anchor = create_trust_anchor(
        common_name=f"root.{control_plane_namespace}.{trust_domain}",
        now=now,
        lifetime=anchor_lifetime,
    )
    issuer = create_issuer(
        anchor,
        common_name=issuer_cn,
        now=now,
        lifetime=issuer_lifetime,
        permitted_dns_domains=[issuer_cn] if constrain_issuer else None,
    )
    return TrustMaterial(trust_anchor=anchor, issuer=issuer)


def check_ca_certificate(certificate: x509.Certificate, *, what: str) -> None:
    """Raise :class:`CertificateError` unless ``certificate`` may sign certificates."""
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CertificateError(
            f"{what} is not a CA: it has no basicConstraints extension"
        ) from None
    if not constraints.ca:
        raise CertificateError(f"{what} is not a CA: basicConstraints has cA=false")
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.key_cert_sign:
        raise CertificateError(f"{what} is not a CA: keyUsage lacks keyCertSign")


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A freshly signed leaf and what a Certify response carries with it."""

    leaf_der: bytes
    intermediates_der: tuple[bytes, ...]
    valid_until: dt.datetime
    serial_number: int

    @property
    def certificate(self) -> x509.Certificate:
        """The leaf parsed from :attr:`leaf_der`, on each access.

        Not parsed up front: Certify sends the DER and never needs the object (a parse is about
        a tenth of the CPU a certificate costs beyond its two ECDSA operations).
        """
        return x509.load_der_x509_certificate(self.leaf_der)


@dataclass(frozen=True, slots=True)
class Issuer:
    """An issuing CA: its certificate, its key, and the chain above it (excluding the anchor).

    ``ceiling`` is an extra upper bound on leaf lifetimes (the expiry of the anchor the issuer
    chains to); leaves are always clamped to the earliest expiry among issuer, chain and ceiling.
    """

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = ()
    ceiling: dt.datetime | None = None
    _chain_der: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    _authority_key_id: x509.AuthorityKeyIdentifier = field(init=False, repr=False, compare=False)
    _not_after: dt.datetime = field(init=False, repr=False, compare=False)
    _leaf_template: LeafTemplate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_ca_certificate(
            self.certificate, what=f"issuer {self.certificate.subject.rfc4514_string()}"
        )
        require_p256_private_key(self.private_key, what="issuer key")
        certificate_key = require_p256_public_key(
            self.certificate.public_key(), what="issuer certificate key"
        )
        if not public_keys_equal(certificate_key, self.private_key.public_key()):
            raise CertificateError("issuer key does not match the issuer certificate's public key")
        object.__setattr__(self, "_authority_key_id", _authority_key_identifier(self.certificate))
        ends = [c.not_valid_after_utc for c in (self.certificate, *self.chain)]
        if self.ceiling is not None:
            ends.append(self.ceiling)
        object.__setattr__(self, "_not_after", min(ends))
        # Encoded once here so that each leaf costs one signature plus a few byte joins.
        object.__setattr__(
            self,
            "_leaf_template",
            LeafTemplate.for_issuer(self.certificate, self.private_key, self._authority_key_id),
        )
        object.__setattr__(
            self,
            "_chain_der",
            tuple(certificate_to_der(c) for c in (self.certificate, *self.chain)),
        )

    @property
    def not_after(self) -> dt.datetime:
        """The earliest expiry in the issuing chain: no leaf may outlive it."""
        return self._not_after

    @property
    def intermediates_der(self) -> tuple[bytes, ...]:
        """Issuer first, then any chain certificates, leaf-ward to root-ward (as Certify sends)."""
        return self._chain_der

    def sign_leaf(
        self,
        public_key: ec.EllipticCurvePublicKey,
        identity: str,
        *,
        now: dt.datetime,
        lifetime: dt.timedelta = DEFAULT_LEAF_LIFETIME,
        clock_skew: dt.timedelta = DEFAULT_CLOCK_SKEW,
        serial_number: int | None = None,
    ) -> IssuedCertificate:
        """Sign a leaf for ``identity`` (already checked by the caller) over ``public_key``.

        NotBefore = now - skew, NotAfter = now + lifetime + skew clamped to :attr:`not_after`;
        keyUsage digitalSignature+keyEncipherment and EKU serverAuth+clientAuth, as Linkerd's
        issuer writes them. Only the identity is taken from the request: every other field is
        the CA's choice, so a CSR cannot smuggle in extensions such as ``cA=true``.
        """
        now = _utc(now)
        require_p256_public_key(public_key, what="leaf public key")
        if now >= self._not_after:
            raise CertificateError(f"issuer expired at {self._not_after.isoformat()}")
        serial = serial_number or x509.random_serial_number()
        not_after = min(now + lifetime + clock_skew, self._not_after)
        tbs = self._leaf_template.tbs_certificate(
            public_key,
            identity,
            serial_number=serial,
            not_before=max(now - clock_skew, self.certificate.not_valid_before_utc),
            not_after=not_after,
        )
        return IssuedCertificate(
            leaf_der=self._leaf_template.sign(tbs),
            intermediates_der=self._chain_der,
            # Certificate times are whole seconds (der.time drops the fraction).
            valid_until=not_after.replace(microsecond=0),
            serial_number=serial,
        )
