"""The Certify exchange without the network: build the request, check the response.

Request (linkerd-wire.md §1.6, §2 proxy steps 1-2, §10 items 1-2): ``identity`` = the local
name, ``token`` = the raw bytes of the token file (re-read for every call, since the
projected token rotates), ``certificate_signing_request`` = a **DER** CSR whose CN and only
DNS SAN are the local name, signed by the proxy's in-memory P-256 key.

Response: ``leaf_certificate`` and ``intermediate_certificates`` are DER; ``valid_until``
must be present and in the future. The leaf must be for *our* key, carry the local name as a
DNS SAN, and chain through the intermediates to the trust anchors at ``now``. Anything else
raises :class:`CertifyResponseError` and the proxy keeps the certificate it has.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from gossamer_api.proxy import identity_pb2
from gossamer_tls import ChainError, PemError, build_csr, verify_chain
from gossamer_tls.keys import public_keys_equal
from gossamer_tls.pem import load_der_certificate

from gossamer_proxy.mesh.tls_contexts import Credentials

__all__ = ["CertifyResponseError", "build_certify_request", "validate_certify_response"]


class CertifyResponseError(ValueError):
    """The identity service answered with something the proxy must not install."""


def build_certify_request(
    key: ec.EllipticCurvePrivateKey, local_name: str, token: bytes
) -> identity_pb2.CertifyRequest:
    return identity_pb2.CertifyRequest(
        identity=local_name, token=token, certificate_signing_request=build_csr(key, local_name)
    )


def validate_certify_response(
    response: identity_pb2.CertifyResponse,
    *,
    key: ec.EllipticCurvePrivateKey,
    local_name: str,
    trust_anchors: Sequence[x509.Certificate],
    now: dt.datetime,
) -> Credentials:
    """Check a CertifyResponse and return the credentials to install."""
    if not response.leaf_certificate:
        raise CertifyResponseError("CertifyResponse has no leaf certificate")
    if not response.HasField("valid_until"):
        raise CertifyResponseError("CertifyResponse has no valid_until")
    valid_until = response.valid_until.ToDatetime(tzinfo=dt.UTC)
    if valid_until <= now:
        raise CertifyResponseError(f"CertifyResponse valid_until {valid_until} is in the past")
    try:
        leaf = load_der_certificate(response.leaf_certificate, what="leaf certificate")
        intermediates = tuple(
            load_der_certificate(der, what=f"intermediate certificate {i}")
            for i, der in enumerate(response.intermediate_certificates, start=1)
        )
    except PemError as exc:
        raise CertifyResponseError(str(exc)) from None
    leaf_key = leaf.public_key()
    if not isinstance(leaf_key, ec.EllipticCurvePublicKey) or not public_keys_equal(
        leaf_key, key.public_key()
    ):
        raise CertifyResponseError("leaf certificate is not for this proxy's key")
    try:
        verify_chain(leaf, intermediates, trust_anchors, now=now, dns_name=local_name)
    except ChainError as exc:
        raise CertifyResponseError(f"leaf certificate rejected: {exc}") from None
    return Credentials(identity=local_name, private_key=key, leaf=leaf, intermediates=intermediates)
