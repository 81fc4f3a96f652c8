"""A throwaway mesh PKI for the mTLS topologies: one anchor, one issuer, three leaves.

Both Gossamer and Envoy get the same P-256 certificates, so the TLS work is equal.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from gossamer_tls import (
    Issuer,
    certificates_to_pem,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    private_key_to_pem,
)

CONTROL_PLANE_NAMESPACE = "gossamer"
TRUST_DOMAIN = "cluster.local"
CLIENT_ID = "client.bench.serviceaccount.identity.gossamer.cluster.local"
SERVER_ID = "server.bench.serviceaccount.identity.gossamer.cluster.local"
#: The viz tap service's identity: the only client a tap-enabled proxy serves ``Observe`` to.
TAP_ID = "tap.gossamer-viz.serviceaccount.identity.gossamer.cluster.local"


@dataclass(frozen=True)
class TlsFiles:
    """One side's certificate chain, key and trust anchors, and the identity it expects."""

    cert: Path
    key: Path
    ca: Path
    identity: str
    peer_identity: str


@dataclass(frozen=True)
class MeshCerts:
    client: TlsFiles
    server: TlsFiles
    #: The tap client's (``tap`` topology): it expects the server's identity of the proxy.
    tap: TlsFiles


def make_mesh_certs(workdir: Path) -> MeshCerts:
    now = dt.datetime.now(dt.UTC)
    material = generate_trust_anchor_and_issuer(
        trust_domain=TRUST_DOMAIN, control_plane_namespace=CONTROL_PLANE_NAMESPACE, now=now
    )
    certs = workdir / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    ca = certs / "ca.pem"
    ca.write_bytes(certificates_to_pem([material.trust_anchor.certificate]))
    issuer = Issuer(
        certificate=material.issuer.certificate,
        private_key=material.issuer.private_key,
        ceiling=material.trust_anchor.certificate.not_valid_after_utc,
    )
    sides = {}
    for name, identity, peer in (
        ("client", CLIENT_ID, SERVER_ID),
        ("server", SERVER_ID, CLIENT_ID),
        ("tap", TAP_ID, SERVER_ID),
    ):
        key = generate_private_key()
        leaf = issuer.sign_leaf(key.public_key(), identity, now=now)
        cert = certs / f"{name}.pem"
        cert.write_bytes(certificates_to_pem([leaf.certificate, material.issuer.certificate]))
        key_path = certs / f"{name}-key.pem"
        key_path.write_bytes(private_key_to_pem(key))
        sides[name] = TlsFiles(cert, key_path, ca, identity, peer)
    return MeshCerts(client=sides["client"], server=sides["server"], tap=sides["tap"])
