"""Who is calling the tap service, and may they tap this resource (pure).

Authentication follows Kubernetes's own rules for a client certificate (user = the subject's
common name, groups = its organizations), or takes the user a ``TokenReview`` returned; as
the apiserver does, every authenticated user is also in ``system:authenticated``.
Authorization is the ``SubjectAccessReview`` the apiserver would make for Linkerd's
aggregated tap API: verb ``watch`` on ``<kind>s`` subresource ``tap`` (name and namespace
of the target) in API group ``tap.linkerd.io``. Anything but an explicit ``allowed: true``
is a refusal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from gossamer_cli.viz.tap_service.api import GROUP, VERSION, TapPath

__all__ = [
    "AUTHENTICATED_GROUP",
    "AuthError",
    "Decision",
    "Subject",
    "access_review",
    "bearer_token",
    "decision",
    "subject_from_certificate",
    "with_authenticated_group",
]

#: The group the apiserver (and its delegating authenticator) adds to every authenticated user.
AUTHENTICATED_GROUP = "system:authenticated"
ANONYMOUS_USER = "system:anonymous"


class AuthError(Exception):
    """The caller is not authenticated (401) or not authorized (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Subject:
    user: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


def with_authenticated_group(subject: Subject) -> Subject:
    """Kubernetes's ``AuthenticatedGroupAdder``: ``system:authenticated`` joins the groups of
    every user but ``system:anonymous``, unless it is there already."""
    if subject.user == ANONYMOUS_USER or AUTHENTICATED_GROUP in subject.groups:
        return subject
    return Subject(subject.user, (*subject.groups, AUTHENTICATED_GROUP), subject.uid, subject.extra)


def subject_from_certificate(certificate: x509.Certificate) -> Subject:
    """Kubernetes's x509 authenticator: CN is the user, each O a group (and, as for every
    authenticated user, ``system:authenticated``)."""
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    user = str(names[0].value) if names else ""
    if not user:
        raise AuthError(401, "the client certificate names no user (empty common name)")
    groups = tuple(
        str(a.value)
        for a in certificate.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    )
    return with_authenticated_group(Subject(user, groups))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None without the header)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthError(401, "Authorization must be 'Bearer <token>'")
    return token


def access_review(subject: Subject, target: TapPath) -> dict[str, Any]:
    """The ``SubjectAccessReview`` for ``subject`` tapping ``target``."""
    spec: dict[str, Any] = {
        "user": subject.user,
        "groups": list(subject.groups),
        "resourceAttributes": {
            "group": GROUP,
            "version": VERSION,
            "resource": target.plural,
            "subresource": "tap",
            "verb": "watch",
            "namespace": target.namespace,
            "name": target.name,
        },
    }
    if subject.uid:
        spec["uid"] = subject.uid
    if subject.extra:
        spec["extra"] = {k: list(v) for k, v in subject.extra.items()}
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": spec,
    }


def decision(status: Mapping[str, Any] | None) -> Decision:
    """The review's answer: allowed only when the status says exactly ``allowed: true``."""
    status = status or {}
    allowed = status.get("allowed") is True and status.get("denied") is not True
    reason = str(status.get("reason") or status.get("evaluationError") or "")
    return Decision(allowed, reason)
