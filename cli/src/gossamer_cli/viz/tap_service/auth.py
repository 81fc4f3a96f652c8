"""Delegated authentication and authorization of tap callers, through the Kubernetes API.

As an aggregated API server does: the cluster's client CA (``client-ca-file`` of the
``kube-system/extension-apiserver-authentication`` ConfigMap, which the apiserver keeps) is
what the TLS server verifies client certificates against; a bearer token is checked with a
``TokenReview``; every call is authorized with a ``SubjectAccessReview`` (:mod:`.authz`).
A failed review is a refusal, never a pass.
"""

from __future__ import annotations

from cryptography import x509
from gossamer_kube.client import KubeClient
from gossamer_kube.errors import KubeError
from gossamer_kube.resources import CONFIGMAPS

from gossamer_cli.viz.tap_service.api import TapPath
from gossamer_cli.viz.tap_service.authz import (
    AuthError,
    Subject,
    access_review,
    bearer_token,
    decision,
    subject_from_certificate,
)

__all__ = ["AUTH_CONFIG_MAP", "Authenticator", "cluster_client_ca"]

AUTH_CONFIG_MAP = ("kube-system", "extension-apiserver-authentication")


async def cluster_client_ca(kube: KubeClient) -> str:
    """The PEM CA bundle the apiserver verifies client certificates against."""
    namespace, name = AUTH_CONFIG_MAP
    config_map = await kube.get(CONFIGMAPS, name, namespace=namespace)
    pem = (config_map.get("data") or {}).get("client-ca-file") or ""
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError(f"{namespace}/{name} has no client-ca-file")
    return str(pem)


class Authenticator:
    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    async def authenticate(self, peer_der: bytes | None, authorization: str | None) -> Subject:
        """The caller: its verified client certificate's subject, or its token's user.

        ``peer_der`` is only ever a certificate the TLS handshake verified against the
        cluster's client CA."""
        if peer_der:
            return subject_from_certificate(x509.load_der_x509_certificate(peer_der))
        token = bearer_token(authorization)
        if token is None:
            raise AuthError(401, "authenticate with a client certificate or a bearer token")
        try:
            review = await self.kube.token_review(token)
        except KubeError as exc:
            raise AuthError(503, f"cannot review the token: {exc}") from exc
        if not review.authenticated or not review.username:
            raise AuthError(
                401, f"token not authenticated{': ' + review.error if review.error else ''}"
            )
        return Subject(review.username, review.groups, review.uid, review.extra)

    async def authorize(self, subject: Subject, target: TapPath) -> None:
        try:
            status = await self.kube.subject_access_review(access_review(subject, target))
        except KubeError as exc:
            raise AuthError(503, f"cannot review access: {exc}") from exc
        verdict = decision(status)
        if not verdict.allowed:
            what = f"{target.plural}/{target.name}" if target.plural != "namespaces" else ""
            raise AuthError(
                403,
                f"{subject.user} may not watch {what or 'namespaces/' + target.name}/tap "
                f"in namespace {target.namespace} (API group tap.linkerd.io)"
                + (f": {verdict.reason}" if verdict.reason else ""),
            )
