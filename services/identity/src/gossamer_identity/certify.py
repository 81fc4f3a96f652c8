"""The Certify decision, sans-io: request fields + TokenReview verdict + issuer → leaf or refusal.

The gRPC servicer (:mod:`gossamer_identity.server`) only moves data: it calls
:meth:`Certifier.check_request`, performs the TokenReview the returned
:class:`PendingCertify` asks for, hands the verdict to :meth:`Certifier.authorize`, and finally
asks :meth:`Certifier.sign` for the certificate. Every way to say no is a :class:`Refusal` carrying
the gRPC status Linkerd's identity controller uses for it and a metric-safe ``reason``. Nothing in
a refusal message contains the token.

Order of checks (Linkerd's, see linkerd-wire.md §2): issuer ready → required fields and sizes →
CSR parse (DER) → CSR key, signature and names → TokenReview → username → identity match → sign.
Checking the CSR before the TokenReview keeps malformed requests from costing an apiserver call.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Protocol

from gossamer_tls import (
    CertificateError,
    CheckedCsr,
    CsrNameError,
    CsrSignatureError,
    IdentityNameError,
    IssuedCertificate,
    Issuer,
    MalformedCsrError,
    UnsupportedKeyError,
    check_csr,
    identity_for_username,
    load_csr,
    parse_identity_name,
)
from gossamer_tls.authority import DEFAULT_CLOCK_SKEW, DEFAULT_LEAF_LIFETIME

TOKEN_AUDIENCE = "identity.l5d.io"  # noqa: S105 - an audience name, not a secret
"""The audience of the projected service-account token every proxy presents."""


class Status(enum.IntEnum):
    """The gRPC status codes a Certify refusal can carry (numeric values are gRPC's)."""

    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    FAILED_PRECONDITION = 9
    RESOURCE_EXHAUSTED = 8
    INTERNAL = 13
    UNAVAILABLE = 14


class Reason(enum.StrEnum):
    """Why a request was refused; a bounded set, used as the ``reason`` metric label."""

    ISSUER_NOT_READY = "issuer_not_ready"
    ISSUER_INVALID = "issuer_invalid"
    MISSING_FIELD = "missing_field"
    OVERSIZED = "oversized"
    INVALID_IDENTITY = "invalid_identity"
    INVALID_TOKEN_ENCODING = "invalid_token_encoding"  # noqa: S105
    MALFORMED_CSR = "malformed_csr"
    BAD_CSR_SIGNATURE = "bad_csr_signature"
    UNSUPPORTED_KEY = "unsupported_key"
    CSR_NAME_MISMATCH = "csr_name_mismatch"
    INVALID_TOKEN = "invalid_token"  # noqa: S105
    EXPIRED_TOKEN = "expired_token"  # noqa: S105
    WRONG_AUDIENCE = "wrong_audience"
    UNAUTHENTICATED = "unauthenticated"
    INVALID_USERNAME = "invalid_username"
    IDENTITY_MISMATCH = "identity_mismatch"
    TOKEN_REVIEW_FAILED = "token_review_failed"  # noqa: S105


class Refusal(Exception):  # noqa: N818 - a decision, reported to the client as a gRPC status
    """A Certify request that will not be granted: the gRPC status, a reason label and why."""

    def __init__(self, status: Status, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"Refusal({self.status.name}, {self.reason.value}, {self.message!r})"


class TokenReviewOutcome(Protocol):
    """What the apiserver said about a token (``gossamer_kube.client.TokenReviewResult`` fits)."""

    @property
    def authenticated(self) -> bool: ...
    @property
    def username(self) -> str: ...
    @property
    def audiences(self) -> tuple[str, ...]: ...
    @property
    def error(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """Size caps that keep one request from costing unbounded memory or CPU.

    Real requests are far smaller: a projected token is ~1 KiB, a P-256 CSR ~300 bytes.
    """

    max_token_bytes: int = 16 * 1024
    max_csr_bytes: int = 8 * 1024
    max_identity_bytes: int = 253


@dataclass(frozen=True, slots=True)
class CertifyConfig:
    """How this control plane names and certifies identities."""

    control_plane_namespace: str
    trust_domain: str
    lifetime: dt.timedelta = DEFAULT_LEAF_LIFETIME
    clock_skew: dt.timedelta = DEFAULT_CLOCK_SKEW
    limits: Limits = field(default_factory=Limits)
    legacy_audience_fallback: bool = False
    """Retry a TokenReview without audiences when the apiserver complains about token audiences
    (Linkerd does this for clusters without token projection). Off by default: it lets a token
    minted for the apiserver itself stand in for an identity token."""


@dataclass(frozen=True, slots=True)
class PendingCertify:
    """A request that passed every local check and awaits the TokenReview verdict."""

    identity: str
    csr: CheckedCsr
    token: str = field(repr=False)
    audiences: tuple[str, ...] = (TOKEN_AUDIENCE,)

    def without_audiences(self) -> PendingCertify:
        """The legacy retry: the same request, reviewed against the apiserver's own audiences."""
        return PendingCertify(self.identity, self.csr, self.token, audiences=())


@dataclass(frozen=True, slots=True)
class Authorized:
    """The token's service account is entitled to the requested identity."""

    identity: str
    username: str


@dataclass(frozen=True, slots=True)
class RetryWithoutAudiences:
    """Review the token again with no audiences (only with ``legacy_audience_fallback``)."""

    pending: PendingCertify


def _classify_review_error(error: str) -> Reason:
    lowered = error.lower()
    if "audience" in lowered:
        return Reason.WRONG_AUDIENCE
    if "expired" in lowered:
        return Reason.EXPIRED_TOKEN
    return Reason.INVALID_TOKEN


class Certifier:
    """The Certify policy for one control plane; stateless apart from its configuration."""

    def __init__(self, config: CertifyConfig) -> None:
        self.config = config

    def check_request(
        self, identity: str, token: bytes, csr_der: bytes, *, issuer_ready: bool
    ) -> PendingCertify:
        """Validate everything that needs no apiserver: fields, sizes, CSR. Raises Refusal."""
        if not issuer_ready:
            raise Refusal(Status.UNAVAILABLE, Reason.ISSUER_NOT_READY, "cert issuer not ready yet")
        limits = self.config.limits
        missing = [
            name
            for name, value in (("identity", identity), ("token", token), ("CSR", csr_der))
            if not value
        ]
        if missing:
            raise Refusal(
                Status.INVALID_ARGUMENT,
                Reason.MISSING_FIELD,
                f"missing {', '.join(missing)} in Certify request",
            )
        for name, size, cap in (
            ("identity", len(identity.encode()), limits.max_identity_bytes),
            ("token", len(token), limits.max_token_bytes),
            ("CSR", len(csr_der), limits.max_csr_bytes),
        ):
            if size > cap:
                raise Refusal(
                    Status.RESOURCE_EXHAUSTED,
                    Reason.OVERSIZED,
                    f"{name} is {size} bytes, more than the {cap} allowed",
                )
        try:
            parse_identity_name(identity)
        except IdentityNameError as exc:
            raise Refusal(Status.INVALID_ARGUMENT, Reason.INVALID_IDENTITY, str(exc)) from None
        try:
            token_text = token.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise Refusal(
                Status.INVALID_ARGUMENT, Reason.INVALID_TOKEN_ENCODING, "token is not UTF-8 text"
            ) from None
        if not token_text or not token_text.isprintable():
            raise Refusal(
                Status.INVALID_ARGUMENT,
                Reason.INVALID_TOKEN_ENCODING,
                "token is empty or contains control characters",
            )
        try:
            csr = load_csr(csr_der, allow_pem=False)
            checked = check_csr(csr, identity)
        except MalformedCsrError as exc:
            raise Refusal(Status.INVALID_ARGUMENT, Reason.MALFORMED_CSR, str(exc)) from None
        except CsrSignatureError as exc:
            raise Refusal(Status.INVALID_ARGUMENT, Reason.BAD_CSR_SIGNATURE, str(exc)) from None
        except UnsupportedKeyError as exc:
            # Linkerd's Go issuer fails this late with a plain error (UNKNOWN); it is a property of
            # the request that no retry fixes, so Gossamer reports it with the other CSR checks.
            raise Refusal(Status.FAILED_PRECONDITION, Reason.UNSUPPORTED_KEY, str(exc)) from None
        except CsrNameError as exc:
            raise Refusal(Status.FAILED_PRECONDITION, Reason.CSR_NAME_MISMATCH, str(exc)) from None
        return PendingCertify(identity=identity, csr=checked, token=token_text)

    def authorize(
        self, pending: PendingCertify, review: TokenReviewOutcome
    ) -> Authorized | RetryWithoutAudiences:
        """Judge the TokenReview verdict for ``pending``. Raises Refusal."""
        if review.error:
            reason = _classify_review_error(review.error)
            if (
                reason is Reason.WRONG_AUDIENCE
                and pending.audiences
                and self.config.legacy_audience_fallback
            ):
                return RetryWithoutAudiences(pending.without_audiences())
            message = review.error.replace(pending.token, "[REDACTED]")
            raise Refusal(Status.INVALID_ARGUMENT, reason, f"token review failed: {message}")
        if not review.authenticated:
            raise Refusal(
                Status.FAILED_PRECONDITION, Reason.UNAUTHENTICATED, "token is not authenticated"
            )
        if (
            pending.audiences
            and review.audiences
            and not (set(pending.audiences) & set(review.audiences))
        ):
            raise Refusal(
                Status.INVALID_ARGUMENT,
                Reason.WRONG_AUDIENCE,
                f"token is valid for {list(review.audiences)}, not {list(pending.audiences)}",
            )
        try:
            entitled = identity_for_username(
                review.username,
                control_plane_namespace=self.config.control_plane_namespace,
                trust_domain=self.config.trust_domain,
            )
        except IdentityNameError as exc:
            raise Refusal(Status.FAILED_PRECONDITION, Reason.INVALID_USERNAME, str(exc)) from None
        if str(entitled) != pending.identity:
            raise Refusal(
                Status.FAILED_PRECONDITION,
                Reason.IDENTITY_MISMATCH,
                f"requested identity {pending.identity!r} does not match "
                f"{review.username!r}, which is entitled to {str(entitled)!r}",
            )
        return Authorized(identity=pending.identity, username=review.username)

    def review_failed(self, detail: str) -> Refusal:
        """The refusal for a TokenReview that could not be performed (apiserver error)."""
        return Refusal(
            Status.INTERNAL, Reason.TOKEN_REVIEW_FAILED, f"token review request failed: {detail}"
        )

    def sign(
        self,
        pending: PendingCertify,
        authorized: Authorized,
        issuer: Issuer | None,
        *,
        now: dt.datetime,
    ) -> IssuedCertificate:
        """Issue the leaf for an authorized request. Raises Refusal if the issuer cannot."""
        if authorized.identity != pending.identity:
            raise ValueError("authorization is for a different identity than the request")
        if issuer is None:
            raise Refusal(Status.UNAVAILABLE, Reason.ISSUER_NOT_READY, "cert issuer not ready yet")
        try:
            return issuer.sign_leaf(
                pending.csr.public_key,
                pending.identity,
                now=now,
                lifetime=self.config.lifetime,
                clock_skew=self.config.clock_skew,
            )
        except CertificateError as exc:
            raise Refusal(Status.UNKNOWN, Reason.ISSUER_INVALID, str(exc)) from None
