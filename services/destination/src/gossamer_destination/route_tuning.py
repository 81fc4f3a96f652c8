"""Retry and timeout annotations of Services and routes, as outbound route fields (pure).

Linkerd's annotations (docs: reference/retries, reference/timeouts):

* ``retry.linkerd.io/http``: comma-separated ``5xx`` (500-599), ``gateway-error`` (502-504),
  a code (``504``) or a range (``500-504``). Not valid on a GRPCRoute.
* ``retry.linkerd.io/grpc``: comma-separated ``cancelled``, ``deadline-exceeded``,
  ``internal``, ``resource-exhausted``, ``unavailable``. Not valid on an HTTPRoute.
* ``retry.linkerd.io/limit`` (default 1) and ``retry.linkerd.io/timeout`` (per attempt).
* ``timeout.linkerd.io/request``, ``/response``, ``/idle``.

Precedence: if a route carries *any* retry annotation, its retry annotations replace all of
the parent Service's; the same holds, separately, for timeout annotations. An HTTPRoute's
``spec.rules[].timeouts`` (``request``, ``backendRequest``) act as the route's request and
response timeouts where no route annotation sets them. A malformed value is reported and
that object's retry (or timeout) annotations are dropped as a whole, never half-applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from google.protobuf.duration_pb2 import Duration
from gossamer_api.proxy import http_route_pb2, outbound_pb2

from gossamer_destination.profiles import Issues
from gossamer_destination.units import parse_duration

RETRY_HTTP = "retry.linkerd.io/http"
RETRY_GRPC = "retry.linkerd.io/grpc"
RETRY_LIMIT = "retry.linkerd.io/limit"
RETRY_TIMEOUT = "retry.linkerd.io/timeout"
TIMEOUT_REQUEST = "timeout.linkerd.io/request"
TIMEOUT_RESPONSE = "timeout.linkerd.io/response"
TIMEOUT_IDLE = "timeout.linkerd.io/idle"
RETRY_ANNOTATIONS = (RETRY_HTTP, RETRY_GRPC, RETRY_LIMIT, RETRY_TIMEOUT)
TIMEOUT_ANNOTATIONS = (TIMEOUT_REQUEST, TIMEOUT_RESPONSE, TIMEOUT_IDLE)
#: Requests with a larger body are not retried (Linkerd: 64 KiB).
MAX_RETRY_REQUEST_BYTES = 64 * 1024
MAX_RETRY_LIMIT = 2**16 - 1
GRPC_CODES = {
    "cancelled": 1,
    "deadline-exceeded": 4,
    "resource-exhausted": 8,
    "internal": 13,
    "unavailable": 14,
}
_GRPC_FIELDS = {
    1: "cancelled",
    4: "deadine_exceeded",  # sic: the proto's field name
    8: "resource_exhausted",
    13: "internal",
    14: "unavailable",
}


@dataclass(frozen=True, slots=True)
class RetrySpec:
    limit: int = 1
    timeout: float | None = None
    #: HTTP status ranges; ``None`` when no ``retry.linkerd.io/http`` was given (5xx applies).
    http: tuple[tuple[int, int], ...] | None = None
    #: gRPC codes; ``None`` when no ``retry.linkerd.io/grpc`` was given (every retryable code).
    grpc: frozenset[int] | None = None


@dataclass(frozen=True, slots=True)
class TimeoutSpec:
    request: float | None = None
    response: float | None = None
    idle: float | None = None

    @property
    def empty(self) -> bool:
        return self.request is None and self.response is None and self.idle is None


@dataclass(frozen=True, slots=True)
class Tuning:
    """What a route's rules get: its retry (if any) and its timeouts."""

    retry: RetrySpec | None = None
    timeouts: TimeoutSpec = TimeoutSpec()


NO_TUNING = Tuning()


def parse_http_conditions(text: str) -> tuple[tuple[int, int], ...]:
    """``"5xx,429,500-504"`` as status ranges; raises ValueError."""
    out: list[tuple[int, int]] = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item == "5xx":
            out.append((500, 599))
        elif item == "gateway-error":
            out.append((502, 504))
        elif "-" in item:
            start, _, end = item.partition("-")
            lo, hi = _status(start), _status(end)
            if lo > hi:
                raise ValueError(f"status range {item!r} is reversed")
            out.append((lo, hi))
        else:
            code = _status(item)
            out.append((code, code))
    if not out:
        raise ValueError("no status codes")
    return tuple(out)


def _status(text: str) -> int:
    if not text.strip().isdigit() or not 100 <= int(text) <= 599:
        raise ValueError(f"{text!r} is not an HTTP status code (100-599)")
    return int(text)


def parse_grpc_conditions(text: str) -> frozenset[int]:
    """``"cancelled,unavailable"`` as gRPC status codes; raises ValueError."""
    codes: set[int] = set()
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item not in GRPC_CODES:
            raise ValueError(f"{item!r} is not one of {', '.join(GRPC_CODES)}")
        codes.add(GRPC_CODES[item])
    if not codes:
        raise ValueError("no gRPC status codes")
    return frozenset(codes)


def _positive_duration(value: str, name: str) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{name} must be a positive duration")
    return seconds


def retry_from(
    annotations: Mapping[str, str], *, kind: str, where: str, issues: Issues
) -> RetrySpec | None:
    """The retry the annotations of one object ask for; ``None`` if none (or invalid).

    ``kind`` is ``Service``, ``HTTPRoute`` or ``GRPCRoute``: a Service may carry both the
    HTTP and the gRPC condition, a route only its own.
    """
    if not any(a in annotations for a in RETRY_ANNOTATIONS):
        return None
    if kind == "GRPCRoute" and RETRY_HTTP in annotations:
        issues.add(f"{where}: {RETRY_HTTP} is not valid on a GRPCRoute; ignored")
    if kind == "HTTPRoute" and RETRY_GRPC in annotations:
        issues.add(f"{where}: {RETRY_GRPC} is not valid on an HTTPRoute; ignored")
    try:
        spec = RetrySpec()
        if RETRY_LIMIT in annotations:
            text = annotations[RETRY_LIMIT].strip()
            if not text.isdigit() or int(text) > MAX_RETRY_LIMIT:
                raise ValueError(f"{RETRY_LIMIT} must be a whole number <= {MAX_RETRY_LIMIT}")
            spec = replace(spec, limit=int(text))
        if RETRY_TIMEOUT in annotations:
            spec = replace(
                spec, timeout=_positive_duration(annotations[RETRY_TIMEOUT], RETRY_TIMEOUT)
            )
        if RETRY_HTTP in annotations and kind != "GRPCRoute":
            spec = replace(spec, http=parse_http_conditions(annotations[RETRY_HTTP]))
        if RETRY_GRPC in annotations and kind != "HTTPRoute":
            spec = replace(spec, grpc=parse_grpc_conditions(annotations[RETRY_GRPC]))
    except ValueError as exc:
        issues.add(f"{where}: invalid retry annotations ({exc}); no retries")
        return None
    return spec


def timeouts_from(
    annotations: Mapping[str, str], *, where: str, issues: Issues
) -> TimeoutSpec | None:
    """The ``timeout.linkerd.io/*`` of one object; ``None`` if none are set (or invalid)."""
    if not any(a in annotations for a in TIMEOUT_ANNOTATIONS):
        return None
    try:
        values = {
            field: _positive_duration(annotations[name], name)
            for field, name in (
                ("request", TIMEOUT_REQUEST),
                ("response", TIMEOUT_RESPONSE),
                ("idle", TIMEOUT_IDLE),
            )
            if name in annotations
        }
    except ValueError as exc:
        issues.add(f"{where}: invalid timeout annotations ({exc}); ignored")
        return None
    return TimeoutSpec(**values)


def route_spec_timeouts(rule: Mapping[str, Any]) -> TimeoutSpec:
    """An HTTPRoute rule's ``timeouts`` (``request``, ``backendRequest``); "0s" disables."""
    timeouts = rule.get("timeouts") or {}
    values: dict[str, float] = {}
    for field, key in (("request", "request"), ("response", "backendRequest")):
        if timeouts.get(key):
            seconds = parse_duration(timeouts[key])
            if seconds > 0:
                values[field] = seconds
    return TimeoutSpec(**values)


def service_tuning(service: Mapping[str, Any], issues: Issues) -> Tuning:
    """A Service's retry and timeouts (for its default route and routes without their own)."""
    annotations = _annotations(service)
    where = _where("Service", service)
    return Tuning(
        retry=retry_from(annotations, kind="Service", where=where, issues=issues),
        timeouts=timeouts_from(annotations, where=where, issues=issues) or TimeoutSpec(),
    )


def route_tuning(route: Mapping[str, Any], kind: str, service: Tuning, issues: Issues) -> Tuning:
    """A route's own annotations over its parent Service's (each group replaces as a whole)."""
    annotations = _annotations(route)
    where = _where(kind, route)
    retry_set = any(a in annotations for a in RETRY_ANNOTATIONS)
    timeout_set = any(a in annotations for a in TIMEOUT_ANNOTATIONS)
    retry = (
        retry_from(annotations, kind=kind, where=where, issues=issues)
        if retry_set
        else service.retry
    )
    timeouts = (
        timeouts_from(annotations, where=where, issues=issues) or TimeoutSpec()
        if timeout_set
        else service.timeouts
    )
    return Tuning(retry, timeouts)


def rule_timeouts(tuning: Tuning, rule: Mapping[str, Any], route_annotated: bool) -> TimeoutSpec:
    """Merge a rule's ``spec.timeouts`` with the tuning; annotations on the route win."""
    spec = route_spec_timeouts(rule)
    if spec.empty:
        return tuning.timeouts
    base = tuning.timeouts
    if route_annotated:
        return TimeoutSpec(
            request=base.request if base.request is not None else spec.request,
            response=base.response if base.response is not None else spec.response,
            idle=base.idle,
        )
    return TimeoutSpec(
        request=spec.request if spec.request is not None else base.request,
        response=spec.response if spec.response is not None else base.response,
        idle=base.idle,
    )


def has_timeout_annotations(obj: Mapping[str, Any]) -> bool:
    return any(a in _annotations(obj) for a in TIMEOUT_ANNOTATIONS)


# -- protos -----------------------------------------------------------------------------------


def duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def timeouts_proto(spec: TimeoutSpec) -> http_route_pb2.Timeouts | None:
    if spec.empty:
        return None
    out = http_route_pb2.Timeouts()
    if spec.request is not None:
        out.request.CopyFrom(duration(spec.request))
    if spec.response is not None:
        out.response.CopyFrom(duration(spec.response))
    if spec.idle is not None:
        out.idle.CopyFrom(duration(spec.idle))
    return out


def http_retry_proto(spec: RetrySpec) -> outbound_pb2.HttpRoute.Retry:
    out = outbound_pb2.HttpRoute.Retry(
        max_retries=spec.limit, max_request_bytes=MAX_RETRY_REQUEST_BYTES
    )
    for start, end in spec.http or ((500, 599),):
        out.conditions.status_ranges.add(start=start, end=end)
    if spec.timeout is not None:
        out.timeout.CopyFrom(duration(spec.timeout))
    return out


def grpc_retry_proto(spec: RetrySpec) -> outbound_pb2.GrpcRoute.Retry:
    out = outbound_pb2.GrpcRoute.Retry(
        max_retries=spec.limit, max_request_bytes=MAX_RETRY_REQUEST_BYTES
    )
    for code in spec.grpc if spec.grpc is not None else _GRPC_FIELDS:
        setattr(out.conditions, _GRPC_FIELDS[code], True)
    if spec.timeout is not None:
        out.timeout.CopyFrom(duration(spec.timeout))
    return out


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return {str(k): str(v) for k, v in annotations.items()}


def _where(kind: str, obj: Mapping[str, Any]) -> str:
    m = obj.get("metadata") or {}
    return f"{kind} {m.get('namespace')}/{m.get('name')}"
