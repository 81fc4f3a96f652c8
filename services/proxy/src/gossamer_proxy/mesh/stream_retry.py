"""Per-stream retry decisions for HTTP/2 and gRPC, where a response head may be final (sans-io).

An HTTP/2 response whose HEADERS frame carries END_STREAM is complete the moment its head
arrives: a trailers-only gRPC error (``:status 200`` + ``grpc-status``, which grpcio and
grpclib servers send when a call fails before any message) or a bare failed ``:status``.
Such a response can be dropped and the request sent again without the client ever seeing
it; a response with a body is forwarded as it streams, so it is never retried (the proxy
would have to buffer whole responses to do otherwise, which Linkerd does not do either).

:class:`StreamRetry` is the per-request state that decides it: the route's retry rule
(a ServiceProfile route with the profile's budget, or a policy route's ``Retry``), the
replay copy of the request body, and :meth:`StreamRetry.on_head` / :meth:`on_error`
answering "send again?" for each failed attempt, and :meth:`StreamRetry.delay` saying how
long to wait first (a policy ``Retry``'s exponential backoff). The verdict itself is
:func:`~.retry.decide_retry`, the same rule HTTP/1 uses.
"""

from __future__ import annotations

from collections.abc import Iterable

from gossamer_proxy.mesh.backoff import Backoff, UniformSource
from gossamer_proxy.mesh.classify import Classification, classify_for_metrics, grpc_status
from gossamer_proxy.mesh.profile import ProfileRoute
from gossamer_proxy.mesh.retry import (
    DEFAULT_MAX_REQUEST_BYTES,
    ReplayBody,
    RetryCondition,
    RetryVerdict,
    decide_retry,
)
from gossamer_proxy.mesh.retry_budget import RetryBudget

__all__ = ["StreamRetry", "response_head_status"]


def response_head_status(headers: Iterable[tuple[bytes, bytes]]) -> tuple[int, int | None]:
    """``(:status, grpc-status)`` of a response head; ``grpc-status`` only when present.

    A missing or malformed ``:status`` gives 0, which no classification treats as success.
    """
    status = 0
    grpc: int | None = None
    for name, value in headers:
        if name == b":status":
            status = int(value) if value.isdigit() else 0
        elif name == b"grpc-status":
            grpc = grpc_status(((name, value),))
    return status, grpc


class StreamRetry:
    """The retry state of one request: its rule, its replayable body, and the verdicts.

    Exactly one of ``route`` (a retryable ServiceProfile route, with the profile's
    ``budget``) or ``condition`` (a policy route's ``Retry``, with its ``backoff``) is given.
    """

    __slots__ = ("backoff", "body", "budget", "condition", "route", "trailers")

    def __init__(
        self,
        *,
        route: ProfileRoute | None = None,
        budget: RetryBudget | None = None,
        condition: RetryCondition | None = None,
        limit: int = DEFAULT_MAX_REQUEST_BYTES,
        backoff: Backoff | None = None,
    ) -> None:
        if (route is None) == (condition is None):
            raise ValueError("a stream retries by a profile route or a policy condition")
        if backoff is not None and condition is None:
            raise ValueError("only policy retries back off (profile retries use a budget)")
        self.backoff = backoff
        self.route = route
        self.budget = budget
        self.condition = condition
        self.body = ReplayBody(limit)
        #: The request's trailers, replayed with the body (rare outside gRPC streaming).
        self.trailers: list[tuple[bytes, bytes]] | None = None

    def classify(self, status: int | None, grpc: int | None, *, error: bool) -> Classification:
        if self.route is not None:
            return self.route.classify(status, grpc=grpc, error=error)
        return classify_for_metrics(status, grpc=grpc, error=error)

    def on_head(
        self, *, attempt: int, status: int, grpc: int | None, end_stream: bool, now: float
    ) -> RetryVerdict:
        """A response head arrived for attempt number ``attempt`` (1 = the original).

        Only a head that ends the stream can be retried: anything with a body is the
        client's to see. A granted retry takes a budget token.
        """
        if not end_stream or 100 <= status < 200:
            return RetryVerdict.NOT_RETRYABLE
        return self._decide(attempt, status, grpc, error=False, now=now)

    def delay(self, attempt: int, rng: UniformSource) -> float:
        """Seconds to wait before sending attempt number ``attempt`` (2 = the first retry)."""
        if self.backoff is None or attempt < 2:
            return 0.0
        return self.backoff.delay(attempt - 2, rng)

    def on_error(self, *, attempt: int, now: float) -> RetryVerdict:
        """The attempt failed before any response byte (reset, refused, connection lost)."""
        return self._decide(attempt, None, None, error=True, now=now)

    def _decide(
        self, attempt: int, status: int | None, grpc: int | None, *, error: bool, now: float
    ) -> RetryVerdict:
        if self.route is not None:
            return decide_retry(
                attempt=attempt,
                body=self.body,
                now=now,
                profile_failure=self.route.classify(status, grpc=grpc, error=error),
                budget=self.budget,
                error=error,
            )
        return decide_retry(
            attempt=attempt,
            body=self.body,
            now=now,
            condition=self.condition,
            status=status,
            grpc=grpc,
            error=error,
        )
