"""Outbound policy from ``OutboundPolicies.Watch``: routes, backends, splits, timeouts, retries.

An ``OutboundPolicy`` (linkerd-wire.md §1.8, §3.3) becomes an :class:`OutboundPolicyModel`:

* protocol (``detect`` with its timeout, ``http1``, ``http2``, ``grpc``, ``opaque``,
  ``tls``) and the failure-accrual settings of the HTTP/gRPC protocol;
* HTTP routes (:mod:`.routes` matching and precedence) whose rules carry a
  :class:`RouteAction`: the backend distribution (``random_available`` weighted backendRefs
  as a :class:`~.split.WeightedSplit`, ``first_available``, or ``empty``), timeouts
  (request, response, idle), the ``Retry`` condition, whether ``l5d-*`` request headers are
  honoured, and the filters, compiled by :func:`~.route_filters.compile_filters` (rule
  filters on the action, ``RouteBackend`` filters on each :class:`BackendSpec`; an
  unusable filter makes its route answer 500 rather than failing the whole policy);
* gRPC routes become HTTP routes on ``POST /<service>/<method>``;
* opaque and TLS routes (``TCPRoute``, ``TLSRoute``) become :class:`~.tcp_policy.TcpRoute`\\s:
  SNI matches (TLS), every rule's backends pooled by weight, ``Invalid``/``Forbidden``
  filters kept as refusals (:mod:`.tcp_policy` chooses among them per connection).

Backends are ``forward`` (one address, e.g. the original destination) or ``balancer``
(``Destination.Get`` path, peak-EWMA ``default_rtt``/``decay``), each behind a queue
(capacity, fail-fast timeout). Anything malformed raises :class:`OutboundPolicyError`, so the
watcher keeps the previous policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import structlog
from gossamer_api.addresses import AddressError

from gossamer_proxy.mesh.accrual import (
    DEFAULT_BACKOFF,
    ConsecutiveFailures,
    SuccessRate,
    UnifiedAccrual,
)
from gossamer_proxy.mesh.authz import MetaLabels, grpc_route_match
from gossamer_proxy.mesh.backoff import Backoff
from gossamer_proxy.mesh.endpoints import Endpoint, endpoint_from_proto
from gossamer_proxy.mesh.ewma import DEFAULT_DECAY, DEFAULT_RTT
from gossamer_proxy.mesh.retry import RetryCondition, status_ranges
from gossamer_proxy.mesh.route_filters import NO_FILTERS, RouteFilters, compile_filters
from gossamer_proxy.mesh.routes import (
    HttpRoute,
    RouteError,
    RouteRule,
    compile_host_match,
    compile_route_match,
)
from gossamer_proxy.mesh.split import WeightedSplit
from gossamer_proxy.mesh.tcp_policy import TcpRoute, TcpRouteError, compile_tcp_routes

if TYPE_CHECKING:  # protobuf loads with the control-plane client, not with this module
    from google.protobuf.duration_pb2 import Duration
    from gossamer_api.proxy import outbound_pb2

__all__ = [
    "BackendSpec",
    "FailureAccrualSpec",
    "OutboundPolicyError",
    "OutboundPolicyModel",
    "RouteAction",
    "compile_outbound_policy",
]

_log = structlog.get_logger("gossamer.proxy.policy")

Distribution = Literal["empty", "first_available", "random_available"]


class OutboundPolicyError(ValueError):
    """An ``OutboundPolicy`` cannot be used."""


def _seconds(duration: Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


@dataclass(frozen=True, slots=True)
class BackendSpec:
    meta: MetaLabels
    forward: Endpoint | None = None
    discovery_path: str | None = None
    default_rtt: float = DEFAULT_RTT
    decay: float = DEFAULT_DECAY
    queue_capacity: int = 100
    failfast_timeout: float = 3.0
    #: The ``RouteBackend``'s own filters, applied after the rule's.
    filters: RouteFilters = field(default=NO_FILTERS, compare=False)


@dataclass(frozen=True, slots=True)
class RouteAction:
    meta: MetaLabels
    distribution: Distribution
    backends: WeightedSplit[BackendSpec]
    ordered_backends: tuple[BackendSpec, ...] = ()
    request_timeout: float | None = None
    response_timeout: float | None = None
    idle_timeout: float | None = None
    retry: RetryCondition | None = None
    retry_backoff: Backoff | None = None
    max_request_bytes: int | None = None
    allow_l5d_request_headers: bool = False
    filters: RouteFilters = field(default=NO_FILTERS, compare=False)


@dataclass(frozen=True, slots=True)
class FailureAccrualSpec:
    max_failures: int
    backoff: Backoff
    #: Unified accrual's success-rate threshold (``None``: consecutive failures only).
    success_rate: SuccessRate | None = None

    def new(self) -> ConsecutiveFailures:
        if self.success_rate is not None:
            return UnifiedAccrual(self.success_rate, self.max_failures, self.backoff)
        return ConsecutiveFailures(self.max_failures, self.backoff)


@dataclass(frozen=True, slots=True)
class OutboundPolicyModel:
    meta: MetaLabels
    protocol: str
    detect_timeout: float | None = None
    http1_routes: tuple[HttpRoute[RouteAction], ...] = ()
    http2_routes: tuple[HttpRoute[RouteAction], ...] = ()
    grpc_routes: tuple[HttpRoute[RouteAction], ...] = ()
    #: ``OpaqueRoute``\s: of the ``opaque`` protocol, or ``detect``'s for non-HTTP traffic.
    opaque_routes: tuple[TcpRoute, ...] = ()
    #: ``TlsRoute``\s of the ``tls`` protocol, chosen by the ClientHello's SNI.
    tls_routes: tuple[TcpRoute, ...] = ()
    failure_accrual: FailureAccrualSpec | None = None


def _backoff(message: Any) -> Backoff:
    try:
        return Backoff(
            min=_seconds(message.min_backoff),
            max=_seconds(message.max_backoff),
            jitter_ratio=message.jitter_ratio,
        )
    except ValueError as exc:
        raise OutboundPolicyError(f"invalid backoff: {exc}") from None


def _backend(message: outbound_pb2.Backend) -> BackendSpec:
    meta = MetaLabels.from_proto(message.metadata if message.HasField("metadata") else None)
    capacity, failfast = 100, 3.0
    if message.HasField("queue"):
        capacity = message.queue.capacity
        failfast = _seconds(message.queue.failfast_timeout)
    kind = message.WhichOneof("kind")
    if kind == "forward":
        try:
            forward = endpoint_from_proto(message.forward)
        except AddressError as exc:
            raise OutboundPolicyError(f"invalid forward backend: {exc}") from None
        return BackendSpec(
            meta, forward=forward, queue_capacity=capacity, failfast_timeout=failfast
        )
    if kind == "balancer":
        balancer = message.balancer
        path = balancer.discovery.dst.path
        if not path:
            raise OutboundPolicyError(f"balancer backend {meta.name!r} has no discovery path")
        rtt, decay = DEFAULT_RTT, DEFAULT_DECAY
        load = balancer.WhichOneof("load")
        if load is not None:
            ewma = getattr(balancer, load)
            rtt = _seconds(ewma.default_rtt) or rtt
            decay = _seconds(ewma.decay) or decay
        return BackendSpec(
            meta,
            discovery_path=path,
            default_rtt=rtt,
            decay=decay,
            queue_capacity=capacity,
            failfast_timeout=failfast,
        )
    raise OutboundPolicyError(f"backend {meta.name!r} is neither forward nor balancer")


def _route_backend(message: Any, grpc: bool | None) -> BackendSpec:
    """A ``RouteBackend``; ``grpc`` None means an opaque/TLS route (filters not compiled)."""
    spec = _backend(message.backend)
    if grpc is None or not message.filters:
        return spec
    return replace(spec, filters=compile_filters(message.filters, grpc=grpc))


def _distribution(
    message: Any, grpc: bool | None = None
) -> tuple[Distribution, WeightedSplit[BackendSpec], tuple[BackendSpec, ...]]:
    kind = message.WhichOneof("kind")
    if kind == "random_available":
        weighted = [
            (_route_backend(b.backend, grpc), b.weight) for b in message.random_available.backends
        ]
        return "random_available", WeightedSplit(weighted), tuple(b for b, _ in weighted)
    if kind == "first_available":
        ordered = tuple(_route_backend(b, grpc) for b in message.first_available.backends)
        return "first_available", WeightedSplit((b, 1) for b in ordered[:1]), ordered
    return "empty", WeightedSplit(()), ()


def _grpc_retry(message: Any) -> RetryCondition:
    conditions = message.conditions
    codes = {
        code
        for code, name in (
            (1, "cancelled"),
            (4, "deadine_exceeded"),
            (8, "resource_exhausted"),
            (13, "internal"),
            (14, "unavailable"),
        )
        if getattr(conditions, name)
    }
    return RetryCondition(
        max_retries=message.max_retries,
        status_ranges=(),
        grpc_codes=frozenset(codes),
        timeout=_seconds(message.timeout) if message.HasField("timeout") else None,
    )


def _http_retry(message: Any) -> RetryCondition:
    try:
        ranges = status_ranges((r.start, r.end) for r in message.conditions.status_ranges)
    except ValueError as exc:
        raise OutboundPolicyError(str(exc)) from None
    return RetryCondition(
        max_retries=message.max_retries,
        status_ranges=ranges or ((500, 599),),
        timeout=_seconds(message.timeout) if message.HasField("timeout") else None,
    )


def _action(route_meta: MetaLabels, rule: Any, grpc: bool) -> RouteAction:
    distribution, split, ordered = _distribution(rule.backends, grpc)
    request = response = idle = None
    if rule.HasField("timeouts"):
        t = rule.timeouts
        request = _seconds(t.request) if t.HasField("request") else None
        response = _seconds(t.response) if t.HasField("response") else None
        idle = _seconds(t.idle) if t.HasField("idle") else None
    elif rule.HasField("requestTimeout"):
        response = _seconds(rule.requestTimeout)
    retry = backoff = None
    max_bytes = None
    if rule.HasField("retry"):
        retry = _grpc_retry(rule.retry) if grpc else _http_retry(rule.retry)
        backoff = _backoff(rule.retry.backoff) if rule.retry.HasField("backoff") else None
        max_bytes = rule.retry.max_request_bytes or None
    return RouteAction(
        meta=route_meta,
        distribution=distribution,
        backends=split,
        ordered_backends=ordered,
        request_timeout=request,
        response_timeout=response,
        idle_timeout=idle,
        retry=retry,
        retry_backoff=backoff,
        max_request_bytes=max_bytes,
        allow_l5d_request_headers=rule.allow_l5d_request_headers,
        filters=compile_filters(rule.filters, grpc=grpc),
    )


def _routes(messages: Sequence[Any], grpc: bool) -> tuple[HttpRoute[RouteAction], ...]:
    routes = []
    for message in messages:
        meta = MetaLabels.from_proto(message.metadata if message.HasField("metadata") else None)
        try:
            rules = []
            for rule in message.rules:
                action = _action(meta, rule, grpc)
                for filters in (action.filters, *(b.filters for b in action.ordered_backends)):
                    if filters.error is not None:
                        # The route stays, answering 500 with this reason (Linkerd's
                        # ``invalid`` filter); the rest of the policy is unaffected.
                        _log.warning("route_filter_invalid", route=meta.name, error=filters.error)
                if grpc:
                    matches = tuple(grpc_route_match(m) for m in rule.matches)
                else:
                    matches = tuple(compile_route_match(m) for m in rule.matches)
                rules.append(RouteRule(matches, action))
            hosts = tuple(compile_host_match(h) for h in message.hosts)
        except RouteError as exc:
            raise OutboundPolicyError(f"route {meta.name!r}: {exc}") from None
        routes.append(HttpRoute(hosts, tuple(rules)))
    return tuple(routes)


def _accrual(message: Any) -> FailureAccrualSpec | None:
    if not message.HasField("failure_accrual"):
        return None
    accrual = message.failure_accrual
    kind = accrual.WhichOneof("kind")
    if kind == "consecutive_failures":
        c = accrual.consecutive_failures
        backoff = _backoff(c.backoff) if c.HasField("backoff") else DEFAULT_BACKOFF
        return FailureAccrualSpec(c.max_failures, backoff)
    if kind == "unified":
        u = accrual.unified
        backoff = _backoff(u.backoff) if u.HasField("backoff") else DEFAULT_BACKOFF
        try:
            rate = SuccessRate(
                threshold=u.success_rate_threshold,
                decay=_seconds(u.decay),
                min_requests=u.min_requests,
            )
        except ValueError as exc:
            # The consecutive-failure half still protects the backend.
            _log.warning("failure_accrual_success_rate_invalid", error=str(exc))
            return FailureAccrualSpec(u.max_consecutive_failures, backoff)
        return FailureAccrualSpec(u.max_consecutive_failures, backoff, rate)
    return None


def compile_outbound_policy(message: outbound_pb2.OutboundPolicy) -> OutboundPolicyModel:
    meta = MetaLabels.from_proto(message.metadata if message.HasField("metadata") else None)
    kind = message.protocol.WhichOneof("kind")
    if kind is None:
        raise OutboundPolicyError("OutboundPolicy has no protocol")
    p = message.protocol
    if kind == "detect":
        d = p.detect
        return OutboundPolicyModel(
            meta,
            kind,
            detect_timeout=_seconds(d.timeout) if d.HasField("timeout") else 10.0,
            http1_routes=_routes(d.http1.routes, False),
            http2_routes=_routes(d.http2.routes, False),
            opaque_routes=_tcp_routes(d.opaque.routes, tls=False),
            failure_accrual=_accrual(d.http1) or _accrual(d.http2),
        )
    if kind in ("http1", "http2"):
        proto = getattr(p, kind)
        routes = _routes(proto.routes, False)
        return OutboundPolicyModel(
            meta,
            kind,
            http1_routes=routes if kind == "http1" else (),
            http2_routes=routes if kind == "http2" else (),
            failure_accrual=_accrual(proto),
        )
    if kind == "grpc":
        return OutboundPolicyModel(
            meta, kind, grpc_routes=_routes(p.grpc.routes, True), failure_accrual=_accrual(p.grpc)
        )
    if kind == "opaque":
        return OutboundPolicyModel(
            meta, kind, opaque_routes=_tcp_routes(p.opaque.routes, tls=False)
        )
    return OutboundPolicyModel(meta, kind, tls_routes=_tcp_routes(p.tls.routes, tls=True))


def _tcp_routes(routes: Sequence[Any], *, tls: bool) -> tuple[TcpRoute, ...]:
    try:
        return compile_tcp_routes(routes, _backend, tls=tls)
    except TcpRouteError as exc:
        raise OutboundPolicyError(str(exc)) from None
