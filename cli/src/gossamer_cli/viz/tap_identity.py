"""The viz tap service's mesh identity, and a certificate for it in local mode.

Proxies allow exactly one client to tap them: ``LINKERD2_PROXY_TAP_SVC_NAME``, the identity
of the viz extension's ``tap`` service account (Linkerd's
``tap.linkerd-viz.serviceaccount.identity.linkerd.<trust-domain>``; ours lives in
``gossamer-viz`` under the ``gossamer`` control plane). In local mode the CLI itself is the
tap service: it signs a short-lived certificate for that identity with the local identity
issuer (``control-plane/identity/issuer`` in the state directory), exactly as the identity
service would for the tap pod, and keeps it in memory.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

VIZ_NAMESPACE = "gossamer-viz"
TAP_SERVICE_ACCOUNT = "tap"
#: Long enough for a tap session, short enough to be worthless when it leaks.
CERT_LIFETIME = dt.timedelta(hours=1)


def tap_identity(
    control_plane_namespace: str, trust_domain: str, viz_namespace: str = VIZ_NAMESPACE
) -> str:
    return (
        f"{TAP_SERVICE_ACCOUNT}.{viz_namespace}.serviceaccount.identity."
        f"{control_plane_namespace}.{trust_domain}"
    )


@dataclass(frozen=True)
class TapCredentials:
    identity: str
    chain_pem: bytes
    key_pem: bytes
    trust_anchors_pem: bytes


def local_tap_credentials(
    state_dir: Path, identity: str, *, now: dt.datetime | None = None
) -> TapCredentials:
    """A certificate for ``identity`` from local mode's issuer (raises OSError if absent)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from gossamer_tls import Issuer, certificates_to_pem, generate_private_key, private_key_to_pem

    identity_dir = state_dir / "control-plane" / "identity"  # as `gossamer dev up` lays it out
    issuer_dir = identity_dir / "issuer"
    certificate = x509.load_pem_x509_certificate((issuer_dir / "crt.pem").read_bytes())
    issuer_key = serialization.load_pem_private_key(
        (issuer_dir / "key.pem").read_bytes(), password=None
    )
    anchors = (identity_dir / "ca-bundle.crt").read_bytes()
    key = generate_private_key()
    issued = Issuer(certificate, issuer_key).sign_leaf(  # type: ignore[arg-type]
        key.public_key(),
        identity,
        now=now or dt.datetime.now(dt.UTC),
        lifetime=CERT_LIFETIME,
        clock_skew=dt.timedelta(seconds=10),
    )
    chain = [x509.load_der_x509_certificate(issued.leaf_der)] + [
        x509.load_der_x509_certificate(der) for der in issued.intermediates_der
    ]
    return TapCredentials(identity, certificates_to_pem(chain), private_key_to_pem(key), anchors)
