"""Certificates an installation needs: trust anchor, identity issuer, injector webhook TLS.

``gossamer install`` generates what the user did not give (through :mod:`gossamer_tls`, the
same code the identity service uses) and checks what they did give, so a wrong file is refused
at install time with a reason instead of leaving identity crash-looping in the cluster.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from gossamer_tls import (
    CertificateError,
    Issuer,
    TlsError,
    create_trust_anchor,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    issuer_name,
    load_certificates,
    load_private_key,
    private_key_to_pem,
    verify_chain,
)
from gossamer_tls.pem import certificates_to_pem

#: The webhook serving certificate's life; ``gossamer upgrade`` reuses it, ``check`` warns early.
WEBHOOK_CERT_LIFETIME = dt.timedelta(days=365)


class CertificateInputError(ValueError):
    """User-provided certificate material cannot be used; the message says which and why."""


@dataclass(frozen=True, slots=True)
class IdentityPems:
    trust_anchors_pem: str
    issuer_crt_pem: str
    issuer_key_pem: str


@dataclass(frozen=True, slots=True)
class WebhookPems:
    ca_pem: str
    crt_pem: str
    key_pem: str


def _pem(data: bytes) -> str:
    return data.decode()


def generate_identity(*, namespace: str, trust_domain: str, now: dt.datetime) -> IdentityPems:
    """A fresh anchor and issuer; the anchor's key is dropped (it is only needed to re-issue)."""
    material = generate_trust_anchor_and_issuer(
        trust_domain=trust_domain, control_plane_namespace=namespace, now=now
    )
    return IdentityPems(
        trust_anchors_pem=_pem(certificates_to_pem([material.trust_anchor.certificate])),
        issuer_crt_pem=_pem(certificates_to_pem([material.issuer.certificate])),
        issuer_key_pem=_pem(private_key_to_pem(material.issuer.private_key)),
    )


def check_trust_anchors(pem: str) -> list[x509.Certificate]:
    """The trust anchors in ``pem``; refused when there are none or they do not parse."""
    try:
        return load_certificates(pem, what="trust anchors")
    except TlsError as exc:
        raise CertificateInputError(f"identity trust anchors: {exc}") from exc


def check_identity(
    pems: IdentityPems, *, namespace: str, trust_domain: str, now: dt.datetime
) -> None:
    """Refuse an issuer that the identity service would refuse (or that proxies would reject)."""
    anchors = check_trust_anchors(pems.trust_anchors_pem)
    try:
        issuer_chain = load_certificates(pems.issuer_crt_pem, what="issuer certificate")
        key = load_private_key(pems.issuer_key_pem, what="issuer key")
        issuer = Issuer(certificate=issuer_chain[0], private_key=key, chain=tuple(issuer_chain[1:]))
    except (TlsError, CertificateError) as exc:
        raise CertificateInputError(f"identity issuer: {exc}") from exc
    expected = issuer_name(control_plane_namespace=namespace, trust_domain=trust_domain)
    names = _common_names(issuer.certificate)
    if expected not in names:
        raise CertificateInputError(
            f"identity issuer: its common name is {', '.join(names) or 'empty'}, "
            f"but proxies of namespace {namespace!r} and trust domain {trust_domain!r} "
            f"expect {expected!r}"
        )
    try:
        verify_chain(issuer.certificate, list(issuer.chain), anchors, now=now)
    except TlsError as exc:
        raise CertificateInputError(
            f"identity issuer does not verify against the trust anchors: {exc}"
        ) from exc


def _common_names(certificate: x509.Certificate) -> list[str]:
    return [
        str(attr.value)
        for attr in certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    ]


def webhook_dns_name(namespace: str) -> str:
    return f"gossamer-proxy-injector.{namespace}.svc"


def generate_webhook(*, namespace: str, now: dt.datetime) -> WebhookPems:
    """A private CA (the webhook's caBundle) and a serving certificate for the injector Service."""
    name = webhook_dns_name(namespace)
    ca = create_trust_anchor(
        common_name=f"webhook.{name}", now=now, lifetime=WEBHOOK_CERT_LIFETIME, path_length=0
    )
    key = generate_private_key()
    issued = Issuer(certificate=ca.certificate, private_key=ca.private_key).sign_leaf(
        key.public_key(), name, now=now, lifetime=WEBHOOK_CERT_LIFETIME
    )
    return WebhookPems(
        ca_pem=_pem(certificates_to_pem([ca.certificate])),
        crt_pem=_pem(certificates_to_pem([issued.certificate])),
        key_pem=_pem(private_key_to_pem(key)),
    )
