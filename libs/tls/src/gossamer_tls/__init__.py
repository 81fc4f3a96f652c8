"""gossamer_tls: the mesh's certificate authority primitives.

Trust anchors and issuers (:mod:`.authority`), CSRs (:mod:`.csr`), identity names
(:mod:`.names`), chain verification (:mod:`.chain`) and PEM/DER helpers (:mod:`.pem`). Pure
functions over bytes and ``cryptography`` objects; no I/O and no clock reads.
"""

from gossamer_tls.authority import (
    DEFAULT_CLOCK_SKEW,
    DEFAULT_LEAF_LIFETIME,
    CertifiedKey,
    IssuedCertificate,
    Issuer,
    TrustMaterial,
    check_ca_certificate,
    create_issuer,
    create_trust_anchor,
    generate_trust_anchor_and_issuer,
)
from gossamer_tls.chain import VerifiedChain, dns_names, verify_chain
from gossamer_tls.csr import CheckedCsr, build_csr, check_csr, csr_der_to_pem, load_csr
from gossamer_tls.errors import (
    CertificateError,
    ChainError,
    CsrError,
    CsrNameError,
    CsrSignatureError,
    IdentityNameError,
    KeyMaterialError,
    MalformedCsrError,
    PemError,
    TlsError,
    UnsupportedKeyError,
)
from gossamer_tls.keys import generate_private_key, require_p256_public_key
from gossamer_tls.names import (
    IdentityName,
    identity_for_username,
    identity_name,
    issuer_name,
    parse_identity_name,
)
from gossamer_tls.pem import (
    certificate_to_der,
    certificates_to_pem,
    load_certificate,
    load_certificates,
    load_private_key,
    private_key_to_der,
    private_key_to_pem,
    trust_root_sha256,
)

__all__ = [
    "DEFAULT_CLOCK_SKEW",
    "DEFAULT_LEAF_LIFETIME",
    "CertificateError",
    "CertifiedKey",
    "ChainError",
    "CheckedCsr",
    "CsrError",
    "CsrNameError",
    "CsrSignatureError",
    "IdentityName",
    "IdentityNameError",
    "IssuedCertificate",
    "Issuer",
    "KeyMaterialError",
    "MalformedCsrError",
    "PemError",
    "TlsError",
    "TrustMaterial",
    "UnsupportedKeyError",
    "VerifiedChain",
    "build_csr",
    "certificate_to_der",
    "certificates_to_pem",
    "check_ca_certificate",
    "check_csr",
    "create_issuer",
    "create_trust_anchor",
    "csr_der_to_pem",
    "dns_names",
    "generate_private_key",
    "generate_trust_anchor_and_issuer",
    "identity_for_username",
    "identity_name",
    "issuer_name",
    "load_certificate",
    "load_certificates",
    "load_csr",
    "load_private_key",
    "parse_identity_name",
    "private_key_to_der",
    "private_key_to_pem",
    "require_p256_public_key",
    "trust_root_sha256",
    "verify_chain",
]
