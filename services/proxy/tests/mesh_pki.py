"""A throwaway mesh PKI for loopback proxy tests: a trust anchor, and leaf files per identity.

Shared by the tests that run proxies with static identities (``test_proxy_tap``,
``test_proxy_multicore``); the module-scoped ``trust`` fixture (conftest) makes one per module.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from gossamer_tls import (
    Issuer,
    TrustMaterial,
    certificates_to_pem,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    private_key_to_pem,
)

__all__ = ["anchors_pem", "issue", "new_trust"]


def new_trust() -> TrustMaterial:
    return generate_trust_anchor_and_issuer(
        trust_domain="cluster.local",
        control_plane_namespace="gossamer",
        now=dt.datetime.now(dt.UTC),
    )


def anchors_pem(trust: TrustMaterial) -> str:
    return certificates_to_pem([trust.trust_anchor.certificate]).decode()


def issue(trust: TrustMaterial, directory: Path, name: str) -> tuple[Path, Path]:
    """A one-hour leaf for identity ``name``: its chain and key files in ``directory``."""
    key = generate_private_key()
    issued = Issuer(trust.issuer.certificate, trust.issuer.private_key).sign_leaf(
        key.public_key(),
        name,
        now=dt.datetime.now(dt.UTC),
        lifetime=dt.timedelta(hours=1),
        clock_skew=dt.timedelta(seconds=5),
    )
    chain = [x509.load_der_x509_certificate(issued.leaf_der)] + [
        x509.load_der_x509_certificate(der) for der in issued.intermediates_der
    ]
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(certificates_to_pem(chain))
    key_file.write_bytes(private_key_to_pem(key))
    return cert_file, key_file
