"""The ``io.linkerd.proxy.identity.Identity`` gRPC service: I/O around the Certifier.

This module awaits the TokenReview and turns :class:`~gossamer_identity.certify.Refusal` into
gRPC statuses; every decision is made in :mod:`gossamer_identity.certify`. Refusals are logged
with their reason and the requested identity, never with the token.

It is served by the lean unary server of :mod:`gossamer_common.grpc_unary` rather than
``grpc.aio``, whose per-call machinery cost more CPU than the certificate itself (see there).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from gossamer_api.proxy import identity_pb2
from gossamer_common.grpc_http2 import RequestError, Status
from gossamer_common.grpc_unary import CallInfo, UnaryMethod, UnaryServer
from gossamer_tls import Issuer

from gossamer_identity.certify import (
    Authorized,
    Certifier,
    PendingCertify,
    Refusal,
    RetryWithoutAudiences,
    TokenReviewOutcome,
)
from gossamer_identity.issuer import utc_now
from gossamer_identity.metrics import IdentityMetrics

_log = structlog.get_logger("gossamer.identity")

CERTIFY_PATH = "/io.linkerd.proxy.identity.Identity/Certify"
MAX_RECEIVE_MESSAGE_BYTES = 64 * 1024
"""gRPC-level cap; the Certifier's own field limits are smaller and produce counted refusals."""


class TokenReviewer(Protocol):
    """``gossamer_kube.client.KubeClient`` satisfies this."""

    async def token_review(
        self, token: str, audiences: Sequence[str] = ()
    ) -> TokenReviewOutcome: ...


class IdentityService:
    """Certify: check, TokenReview, authorize, sign."""

    def __init__(
        self,
        certifier: Certifier,
        *,
        issuer: Callable[[], Issuer | None],
        reviewer: TokenReviewer,
        metrics: IdentityMetrics | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        review_timeout: float = 10.0,
    ) -> None:
        self.certifier = certifier
        self._issuer = issuer
        self._reviewer = reviewer
        self._metrics = metrics
        self._clock = clock
        self._review_timeout = review_timeout

    async def handle(self, message: bytes, call: CallInfo) -> bytes:
        """The gRPC method: a serialized CertifyRequest in, a serialized CertifyResponse out.

        Raises :class:`~gossamer_common.grpc_http2.RequestError` with the refusal's status.
        """
        try:
            request = identity_pb2.CertifyRequest.FromString(message)
        except DecodeError:
            raise RequestError(Status.INTERNAL, "could not parse the CertifyRequest") from None
        response = await self.certify(request, peer=call.peer)
        return response.SerializeToString()

    async def certify(
        self, request: identity_pb2.CertifyRequest, *, peer: str = ""
    ) -> identity_pb2.CertifyResponse:
        """One Certify call; raises RequestError carrying a refusal's status and message."""
        identity = request.identity
        try:
            issuer = self._issuer()
            pending = self.certifier.check_request(
                identity,
                request.token,
                request.certificate_signing_request,
                issuer_ready=issuer is not None,
            )
            authorized = await self._review(pending)
            issued = self.certifier.sign(pending, authorized, self._issuer(), now=self._clock())
        except Refusal as refusal:
            if self._metrics is not None:
                self._metrics.record_refusal(refusal)
            _log.warning(
                "certify_refused",
                identity=identity[:253],
                reason=refusal.reason.value,
                code=refusal.status.name,
                message=refusal.message,
                peer=peer,
            )
            raise RequestError(Status(int(refusal.status)), refusal.message) from None
        if self._metrics is not None:
            self._metrics.record_issued()
        _log.info(
            "certify_issued",
            identity=identity,
            serial=f"{issued.serial_number:x}",
            valid_until=issued.valid_until.isoformat(),
        )
        # Whole seconds: certificate validity has no sub-second part.
        valid_until = Timestamp(seconds=int(issued.valid_until.timestamp()))
        return identity_pb2.CertifyResponse(
            leaf_certificate=issued.leaf_der,
            intermediate_certificates=list(issued.intermediates_der),
            valid_until=valid_until,
        )

    async def _review(self, pending: PendingCertify) -> Authorized:
        for _attempt in range(2):  # at most one legacy retry without audiences
            try:
                async with asyncio.timeout(self._review_timeout):
                    review = await self._reviewer.token_review(pending.token, pending.audiences)
            except TimeoutError:
                raise self.certifier.review_failed("timed out") from None
            except Exception as exc:  # apiserver unreachable or error status
                raise self.certifier.review_failed(type(exc).__name__ + ": " + str(exc)) from None
            verdict = self.certifier.authorize(pending, review)
            if isinstance(verdict, RetryWithoutAudiences):
                pending = verdict.pending
                continue
            return verdict
        raise self.certifier.review_failed("token audiences rejected twice")


def create_server(
    service: IdentityService, *, max_receive_message_bytes: int = MAX_RECEIVE_MESSAGE_BYTES
) -> UnaryServer:
    """A gRPC server with the Identity service (start it with ``await server.listen(host, port)``).

    Plaintext on purpose: like Linkerd's controller, the identity service sits behind its own
    proxy sidecar, which terminates the mesh TLS (linkerd-wire.md §10 item 10).
    """
    return UnaryServer(
        [UnaryMethod(CERTIFY_PATH, service.handle, max_request_bytes=max_receive_message_bytes)]
    )
