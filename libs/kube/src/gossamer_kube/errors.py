"""Errors raised by the Kubernetes client, and the parser for the apiserver's ``Status`` bodies.

The apiserver reports failures as ``kind: Status`` objects (HTTP errors, and ``ERROR`` events in
a watch stream). Callers branch on ``status``/``reason`` (404 NotFound, 409 AlreadyExists or
Conflict, 410 Expired), so those are parsed into fields instead of left in a message string.
410 Gone gets its own class, :class:`WatchExpired`, because an informer must answer it with a
fresh list rather than a retry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "KubeApiError",
    "KubeConfigError",
    "KubeConnectionError",
    "KubeError",
    "KubeProtocolError",
    "WatchExpired",
    "error_from_response",
    "error_from_status",
]


class KubeError(Exception):
    """Base class of everything the client raises on purpose."""


class KubeConfigError(KubeError):
    """A kubeconfig or in-cluster configuration is missing, malformed or unsupported."""


class KubeConnectionError(KubeError):
    """The apiserver could not be reached, or the connection broke mid-response."""


class KubeProtocolError(KubeError):
    """The apiserver sent something that is not the JSON the API promises."""


class KubeApiError(KubeError):
    """The apiserver answered with an error ``Status``."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.details: Mapping[str, Any] = details or {}

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: the object already exists, or an update lost a resourceVersion race."""
        return self.status == 409


class WatchExpired(KubeApiError):  # noqa: N818 - the name callers were promised
    """410 Gone: the requested resourceVersion is compacted away; list again, then watch."""


_HTTP_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def error_from_status(body: Mapping[str, Any], http_status: int | None = None) -> KubeApiError:
    """Build the error for a ``kind: Status`` object; ``http_status`` wins over ``code``."""
    code = http_status
    raw_code = body.get("code")
    if code is None:
        code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else 500
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason:
        reason = _HTTP_REASONS.get(code, "Unknown")
    message = body.get("message")
    if not isinstance(message, str):
        message = ""
    details = body.get("details")
    detail_map: Mapping[str, Any] = details if isinstance(details, Mapping) else {}
    cls = WatchExpired if code == 410 else KubeApiError
    return cls(code, reason, message, detail_map)


def error_from_response(http_status: int, body: bytes) -> KubeApiError:
    """Build the error for a non-2xx response, whether or not its body is a ``Status``.

    Proxies and load balancers in front of the apiserver answer with HTML or plain text; the
    first part of such a body is kept as the message so the operator sees what answered.
    """
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if isinstance(parsed, Mapping) and parsed.get("kind") == "Status":
        return error_from_status(parsed, http_status)
    text = body[:512].decode("utf-8", "replace").strip()
    cls = WatchExpired if http_status == 410 else KubeApiError
    return cls(http_status, _HTTP_REASONS.get(http_status, "Unknown"), text)
