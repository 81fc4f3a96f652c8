"""The tap service's serving certificate (pure): a private CA and a certificate for its
Service name, as Linkerd's ``tap-k8s-tls`` Secret and the APIService's ``caBundle``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from gossamer_tls import Issuer, create_trust_anchor, generate_private_key, private_key_to_pem
from gossamer_tls.pem import certificates_to_pem

from gossamer_cli.viz.tap_service.client import service_name

__all__ = ["SERVING_CERT_LIFETIME", "ServingPems", "generate_serving"]

SERVING_CERT_LIFETIME = dt.timedelta(days=365)


@dataclass(frozen=True)
class ServingPems:
    ca_pem: bytes
    crt_pem: bytes
    key_pem: bytes


def generate_serving(
    *, viz_namespace: str, now: dt.datetime, lifetime: dt.timedelta = SERVING_CERT_LIFETIME
) -> ServingPems:
    name = service_name(viz_namespace)
    ca = create_trust_anchor(
        common_name=f"tap-ca.{name}", now=now, lifetime=lifetime, path_length=0
    )
    key = generate_private_key()
    issued = Issuer(certificate=ca.certificate, private_key=ca.private_key).sign_leaf(
        key.public_key(), name, now=now, lifetime=lifetime
    )
    return ServingPems(
        ca_pem=certificates_to_pem([ca.certificate]),
        crt_pem=certificates_to_pem([issued.certificate]),
        key_pem=private_key_to_pem(key),
    )
