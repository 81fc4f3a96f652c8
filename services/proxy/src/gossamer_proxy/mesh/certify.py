"""The Certify exchange without the network: check the response.

Request (linkerd-wire.md §1.6, §2 proxy steps 1-2, §10 items 1-2): ``identity`` = the local
name, ``token`` = the raw bytes of the token file (re-read for every call, since the
projected token rotates), ``certificate_signing_request`` = a **DER** CSR whose CN and only
DNS SAN are the local name, signed by the proxy's in-memory P-256 key (built by
:mod:`.credential_helper`).

Response: ``leaf_certificate`` and ``intermediate_certificates`` are DER; ``valid_until``
must be present and in the future. The leaf must be for *our* key, carry the local name as a
DNS SAN, and chain through the intermediates to the trust anchors (:mod:`.credential_check`).
Anything else raises :class:`CertifyResponseError` and the proxy keeps the certificate it
has.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from gossamer_proxy.mesh.credential_check import (
    CredentialRejected,
    chain_pem_from_der,
    check_credentials,
)
from gossamer_proxy.mesh.tls_contexts import Credentials

if TYPE_CHECKING:  # protobuf loads with the control-plane client, not with this module
    from gossamer_api.proxy import identity_pb2

__all__ = ["CertifyResponseError", "validate_certify_response"]


class CertifyResponseError(ValueError):
    """The identity service answered with something the proxy must not install."""


def validate_certify_response(
    response: identity_pb2.CertifyResponse,
    *,
    key_pem: bytes,
    local_name: str,
    trust_anchors_pem: str,
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
    chain_pem = chain_pem_from_der(
        response.leaf_certificate, tuple(response.intermediate_certificates)
    )
    try:
        return check_credentials(local_name, key_pem, chain_pem, trust_anchors_pem)
    except CredentialRejected as exc:
        raise CertifyResponseError(f"leaf certificate rejected: {exc}") from None
