"""Delegated authentication and authorization of tap callers, through the Kubernetes API.

As an aggregated API server does: the cluster's client CA (``client-ca-file`` of the
``kube-system/extension-apiserver-authentication`` ConfigMap, which the apiserver keeps) is
what the TLS server verifies client certificates against; a bearer token is checked with a
``TokenReview``; a call the apiserver proxies (the APIService) is the user its front-proxy
certificate's headers name (:mod:`.frontproxy`); every call is authorized with a
``SubjectAccessReview`` (:mod:`.authz`). A failed review is a refusal, never a pass.
Reviews are cached for a few seconds and bounded in flight (:mod:`.review_cache`).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from cryptography import x509
from gossamer_kube.client import KubeClient, TokenReviewResult
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
    with_authenticated_group,
)
from gossamer_cli.viz.tap_service.frontproxy import (
    FrontProxy,
    Headers,
    chains_to,
    front_proxy_from_config_map,
)
from gossamer_cli.viz.tap_service.review_cache import ReviewCache, ReviewGate, review_key

__all__ = ["AUTH_CONFIG_MAP", "Authenticator", "cluster_authentication", "cluster_client_ca"]

AUTH_CONFIG_MAP = ("kube-system", "extension-apiserver-authentication")


async def cluster_authentication(kube: KubeClient) -> tuple[str, FrontProxy | None]:
    """The cluster's client CA (PEM) and its front proxy's settings (None without one)."""
    namespace, name = AUTH_CONFIG_MAP
    config_map = await kube.get(CONFIGMAPS, name, namespace=namespace)
    data = config_map.get("data") or {}
    pem = data.get("client-ca-file") or ""
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError(f"{namespace}/{name} has no client-ca-file")
    try:
        front_proxy = front_proxy_from_config_map(data)
    except ValueError as exc:
        raise ValueError(f"{namespace}/{name}: {exc}") from exc
    return str(pem), front_proxy


async def cluster_client_ca(kube: KubeClient) -> str:
    """The PEM CA bundle the apiserver verifies client certificates against."""
    return (await cluster_authentication(kube))[0]


class _NoHeaders:
    def getall(self, key: str, default: list[str]) -> list[str]:
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(())


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Authenticator:
    """``client_ca_pem``: the CA client certificates name users by; ``front_proxy``: the
    apiserver's front proxy, whose connections name the user in headers. The TLS server
    verifies client certificates against both; which one issued a certificate decides how
    it is read, so a front-proxy certificate is never a user and a user's never a proxy.
    Without ``client_ca_pem`` (and without a front proxy) a TLS-verified certificate is a
    user, as when the server trusted only the client CA. ``monotonic`` times the review
    cache; ``gate`` bounds the reviews in flight."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        client_ca_pem: str | None = None,
        front_proxy: FrontProxy | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        token_reviews: ReviewCache[TokenReviewResult] | None = None,
        access_reviews: ReviewCache[dict[str, Any]] | None = None,
        gate: ReviewGate | None = None,
    ) -> None:
        self.kube = kube
        self.client_ca = (
            tuple(x509.load_pem_x509_certificates(client_ca_pem.encode()))
            if client_ca_pem
            else None
        )
        self.front_proxy = front_proxy
        self._clock = clock
        self._monotonic = monotonic
        self._token_reviews = ReviewCache() if token_reviews is None else token_reviews
        self._access_reviews = ReviewCache() if access_reviews is None else access_reviews
        self._gate = ReviewGate() if gate is None else gate

    def _certificate_subject(self, certificate: x509.Certificate, headers: Headers) -> Subject:
        now = self._clock()
        if self.front_proxy is not None and self.front_proxy.is_front_proxy(certificate, now):
            # The aggregator's X-Remote-Group already names system:authenticated; as the
            # delegating authenticator, add it should another front proxy leave it out.
            return with_authenticated_group(self.front_proxy.subject(headers))
        if self.client_ca is None and self.front_proxy is not None:
            raise AuthError(401, "the client certificate is not the apiserver's front proxy")
        if self.client_ca is not None and not chains_to(certificate, self.client_ca, now):
            raise AuthError(401, "the client certificate is not from the cluster's client CA")
        return subject_from_certificate(certificate)

    async def authenticate(
        self,
        peer_der: bytes | None,
        authorization: str | None,
        headers: Headers | None = None,
    ) -> Subject:
        """The caller: the user the front proxy names, its verified client certificate's
        subject, or its token's user.

        ``peer_der`` is only ever a certificate the TLS handshake verified; ``headers`` are
        read only when that certificate is the front proxy's."""
        if peer_der:
            certificate = x509.load_der_x509_certificate(peer_der)
            return self._certificate_subject(certificate, headers or _NoHeaders())
        token = bearer_token(authorization)
        if token is None:
            raise AuthError(401, "authenticate with a client certificate or a bearer token")
        review = await self._token_review(token)
        if not review.authenticated or not review.username:
            raise AuthError(
                401, f"token not authenticated{': ' + review.error if review.error else ''}"
            )
        return with_authenticated_group(
            Subject(review.username, review.groups, review.uid, review.extra)
        )

    async def _token_review(self, token: str) -> TokenReviewResult:
        key = review_key(token)
        cached = self._token_reviews.get(key, self._monotonic())
        if cached is not None:
            return cached
        with self._gate.admit():
            try:
                review = await self.kube.token_review(token)
            except KubeError as exc:
                raise AuthError(503, f"cannot review the token: {exc}") from exc
        self._token_reviews.put(key, review, self._monotonic())
        return review

    async def _access_review(self, review: dict[str, Any]) -> dict[str, Any]:
        key = review_key(json.dumps(review["spec"], sort_keys=True))
        cached = self._access_reviews.get(key, self._monotonic())
        if cached is not None:
            return cached
        with self._gate.admit():
            try:
                status = await self.kube.subject_access_review(review)
            except KubeError as exc:
                raise AuthError(503, f"cannot review access: {exc}") from exc
        status = dict(status or {})
        self._access_reviews.put(key, status, self._monotonic())
        return status

    async def authorize(self, subject: Subject, target: TapPath) -> None:
        status = await self._access_review(access_review(subject, target))
        verdict = decision(status)
        if not verdict.allowed:
            what = f"{target.plural}/{target.name}" if target.plural != "namespaces" else ""
            raise AuthError(
                403,
                f"{subject.user} may not watch {what or 'namespaces/' + target.name}/tap "
                f"in namespace {target.namespace} (API group tap.linkerd.io)"
                + (f": {verdict.reason}" if verdict.reason else ""),
            )
