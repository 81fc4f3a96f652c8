"""Mesh identity names and the Kubernetes usernames they come from.

A workload's identity is ``<sa>.<ns>.serviceaccount.identity.<control-plane-ns>.<trust-domain>``.
The identity service derives it from the TokenReview username
``system:serviceaccount:<ns>:<sa>``, and the proxy puts it in its CSR; both must agree exactly.
Linkerd's generic form is ``{name}.{namespace}.{type}.identity.{controlNS}.{domain}`` with
name, namespace and type each a DNS-1123 label, which is what :func:`parse_identity_name` accepts.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from gossamer_tls.errors import IdentityNameError

SERVICE_ACCOUNT_KIND = "serviceaccount"
IDENTITY_LABEL = "identity"
MAX_DNS_NAME_LENGTH = 253
MAX_COMMON_NAME_LENGTH = 64
"""X.509's upper bound on a commonName (RFC 5280 ub-common-name); longer identities go in the
DNS SAN only, which is the name every verifier (webpki, Go, OpenSSL) actually checks."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def identity_subject(identity: str) -> x509.Name:
    """Subject for a CSR or leaf: CN = identity when it fits in a commonName, else empty."""
    if len(identity) > MAX_COMMON_NAME_LENGTH:
        return x509.Name([])
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)])


def is_dns_label(value: str) -> bool:
    """Whether ``value`` is a DNS-1123 label (lowercase alphanumerics and '-', 1..63 chars)."""
    return _DNS_LABEL.fullmatch(value) is not None


def validate_dns_name(value: str, *, what: str) -> str:
    """Check a dotted DNS-1123 name (used for trust domains); returns it unchanged."""
    if not value:
        raise IdentityNameError(f"{what} is empty")
    if len(value) > MAX_DNS_NAME_LENGTH:
        raise IdentityNameError(f"{what} is longer than {MAX_DNS_NAME_LENGTH} characters")
    for label in value.split("."):
        if not is_dns_label(label):
            raise IdentityNameError(f"{what} {value!r} has an invalid DNS label {label!r}")
    return value


def _require_label(value: str, what: str) -> str:
    if not is_dns_label(value):
        raise IdentityNameError(f"{what} {value!r} is not a DNS-1123 label")
    return value


@dataclass(frozen=True, slots=True)
class IdentityName:
    """The parts of a mesh identity name."""

    name: str
    namespace: str
    control_plane_namespace: str
    trust_domain: str
    kind: str = SERVICE_ACCOUNT_KIND

    def __post_init__(self) -> None:
        _require_label(self.name, "identity name")
        _require_label(self.namespace, "namespace")
        _require_label(self.kind, "identity type")
        _require_label(self.control_plane_namespace, "control-plane namespace")
        validate_dns_name(self.trust_domain, what="trust domain")
        if len(str(self)) > MAX_DNS_NAME_LENGTH:
            raise IdentityNameError(
                f"identity {self!s} is longer than {MAX_DNS_NAME_LENGTH} characters"
            )

    def __str__(self) -> str:
        return (
            f"{self.name}.{self.namespace}.{self.kind}.{IDENTITY_LABEL}."
            f"{self.control_plane_namespace}.{self.trust_domain}"
        )

    @property
    def service_account_username(self) -> str:
        """The Kubernetes username that is entitled to this identity."""
        return f"system:{self.kind}:{self.namespace}:{self.name}"


def identity_name(
    service_account: str, namespace: str, *, control_plane_namespace: str, trust_domain: str
) -> str:
    """``<sa>.<ns>.serviceaccount.identity.<control-plane-ns>.<trust-domain>``."""
    return str(
        IdentityName(
            name=service_account,
            namespace=namespace,
            control_plane_namespace=control_plane_namespace,
            trust_domain=trust_domain,
        )
    )


def issuer_name(*, control_plane_namespace: str, trust_domain: str) -> str:
    """The issuer's conventional common name, ``identity.<control-plane-ns>.<trust-domain>``."""
    _require_label(control_plane_namespace, "control-plane namespace")
    validate_dns_name(trust_domain, what="trust domain")
    return f"{IDENTITY_LABEL}.{control_plane_namespace}.{trust_domain}"


NAME_CACHE_SIZE = 4096
"""Parsed names kept per process: the identity service checks the same few hundred names over
and over (every proxy renews), and :class:`IdentityName` is immutable. Failures are not cached."""


@functools.lru_cache(maxsize=NAME_CACHE_SIZE)
def parse_identity_name(value: str) -> IdentityName:
    """Split an identity name into its parts, raising :class:`IdentityNameError` if malformed."""
    if not value:
        raise IdentityNameError("identity name is empty")
    labels = value.split(".")
    if len(labels) < 6 or labels[3] != IDENTITY_LABEL:
        raise IdentityNameError(
            f"{value!r} is not of the form "
            "<name>.<namespace>.<type>.identity.<control-plane-ns>.<trust-domain>"
        )
    return IdentityName(
        name=labels[0],
        namespace=labels[1],
        kind=labels[2],
        control_plane_namespace=labels[4],
        trust_domain=".".join(labels[5:]),
    )


@functools.lru_cache(maxsize=NAME_CACHE_SIZE)
def identity_for_username(
    username: str, *, control_plane_namespace: str, trust_domain: str
) -> IdentityName:
    """The identity a TokenReview username is entitled to.

    The username must be ``system:<type>:<namespace>:<name>`` with four parts and DNS-label
    values (``system:serviceaccount:emojivoto:web``); anything else raises
    :class:`IdentityNameError`.
    """
    parts = username.split(":")
    if len(parts) != 4 or parts[0] != "system":
        raise IdentityNameError(
            f"username {username!r} is not of the form system:<type>:<namespace>:<name>"
        )
    _, kind, namespace, name = parts
    return IdentityName(
        name=name,
        namespace=namespace,
        kind=kind,
        control_plane_namespace=control_plane_namespace,
        trust_domain=trust_domain,
    )
