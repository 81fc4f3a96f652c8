"""Response classification: was this response a success or a failure?

Two consumers, two rules, both from Linkerd (linkerd-wire.md §8, §9 outbound step 6):

* **Metrics** (``classification="success|failure"`` on ``response_total``) and ServiceProfile
  routes without response classes: an HTTP status ≥ 500 is a failure; for gRPC the
  ``grpc-status`` decides and anything but ``OK`` (0) is a failure.
* **Failure accrual and retries of policy routes** (``client-policy/{http,grpc}.rs``): HTTP 5xx,
  or one of the gRPC codes that mean the *server* is unwell: ``UNKNOWN, DEADLINE_EXCEEDED,
  PERMISSION_DENIED, INTERNAL, UNAVAILABLE, DATA_LOSS``. A client error such as
  ``NOT_FOUND`` or ``INVALID_ARGUMENT`` says nothing about the endpoint's health.

A transport error, a timeout or a stream reset is always a failure. For gRPC the status is
read from the trailers, or from the headers of a trailers-only response.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

__all__ = [
    "GRPC_ACCRUAL_FAILURES",
    "Classification",
    "GrpcStatus",
    "classify_for_accrual",
    "classify_for_metrics",
    "grpc_status",
    "is_grpc",
]


class GrpcStatus(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


GRPC_ACCRUAL_FAILURES = frozenset(
    {
        GrpcStatus.UNKNOWN,
        GrpcStatus.DEADLINE_EXCEEDED,
        GrpcStatus.PERMISSION_DENIED,
        GrpcStatus.INTERNAL,
        GrpcStatus.UNAVAILABLE,
        GrpcStatus.DATA_LOSS,
    }
)


class Classification(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"


def is_grpc(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request or response is gRPC (``content-type: application/grpc[+…]``)."""
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.lower().startswith(b"application/grpc")
    return False


def grpc_status(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The ``grpc-status`` in trailers (or trailers-only headers); ``None`` if absent.

    A malformed value is treated as ``UNKNOWN``, which is how gRPC clients read it too.
    """
    for name, value in headers:
        if name.lower() == b"grpc-status":
            text = value.strip()
            if text.isdigit():
                return int(text)
            return int(GrpcStatus.UNKNOWN)
    return None


def classify_for_metrics(
    status: int | None, *, grpc: int | None = None, error: bool = False
) -> Classification:
    """Linkerd's default classification (``status`` ``None`` = no response)."""
    if error or status is None:
        return Classification.FAILURE
    if grpc is not None:
        return Classification.SUCCESS if grpc == GrpcStatus.OK else Classification.FAILURE
    return Classification.FAILURE if status >= 500 else Classification.SUCCESS


def classify_for_accrual(
    status: int | None, *, grpc: int | None = None, error: bool = False
) -> Classification:
    """Whether an outcome counts against the endpoint for failure accrual."""
    if error or status is None or status >= 500:
        return Classification.FAILURE
    if grpc is not None and grpc in GRPC_ACCRUAL_FAILURES:
        return Classification.FAILURE
    return Classification.SUCCESS
