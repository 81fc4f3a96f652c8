"""Routing one outbound HTTP/2 or gRPC request by its target's ``OutboundPolicy`` (sans-io).

:mod:`.policy_router` routes HTTP/1 requests by the policy's ``http1`` routes. An HTTP/2
connection is routed by the routes for its protocol instead, as Linkerd's outbound stack
does once the protocol is known: a ``detect`` or ``http2`` policy by its ``http2`` routes
(``HTTPRoute``), a ``grpc`` policy by its ``grpc`` routes (``GRPCRoute``, matched on
``POST /<service>/<method>``); an ``http1``-only policy still describes the same Service, so
its routes apply rather than none.

The precedence rules are the HTTP/1 ones: a ServiceProfile with routes or ``dst_overrides``
wins, and only routes from a resource (not the controller's synthesized defaults) take
over from profile-based balancing. So are the timeouts: ``timeouts.request`` bounds the
whole exchange (retries included), ``timeouts.response`` (or the ``Retry``'s own timeout,
when shorter) each attempt until its response head. :func:`direct` folds in what the
app asked through ``l5d-*`` request headers, on routes that allow it.
Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gossamer_proxy.mesh.backoff import Backoff, UniformSource
from gossamer_proxy.mesh.l5d_headers import OutboundDirectives
from gossamer_proxy.mesh.outbound_policy import OutboundPolicyModel, RouteAction
from gossamer_proxy.mesh.policy_router import PolicyRoute, _matched_prefix
from gossamer_proxy.mesh.profile import Profile
from gossamer_proxy.mesh.request import RequestView
from gossamer_proxy.mesh.retry import RetryCondition
from gossamer_proxy.mesh.routes import HttpRoute, find_route

__all__ = [
    "DirectedRoute",
    "attempt_timeout",
    "direct",
    "directed_retry",
    "h2_routes",
    "policy_applies",
    "request_timeout",
    "route_h2_request",
]


def h2_routes(policy: OutboundPolicyModel) -> tuple[HttpRoute[RouteAction], ...]:
    """The routes that apply to an HTTP/2 (or gRPC) request under ``policy``."""
    if policy.protocol in ("detect", "http2"):
        return policy.http2_routes
    if policy.protocol == "grpc":
        return policy.grpc_routes
    if policy.protocol == "http1":
        return policy.http1_routes
    return ()


def policy_applies(profile: Profile | None, policy: OutboundPolicyModel | None) -> bool:
    """Whether ``policy`` routes this target's HTTP/2 requests (rather than the profile)."""
    if profile is not None and (profile.routes or len(profile.dst_overrides) > 0):
        return False
    if policy is None:
        return False
    for route in h2_routes(policy):
        for rule in route.rules:
            if rule.action.meta.kind != "default":
                return True
            break
    return False


def request_timeout(action: RouteAction) -> float | None:
    """How long the whole request may take, retries included (``None``: unbounded).

    Zero means "no timeout", as in Gateway API.
    """
    return action.request_timeout or None


def attempt_timeout(action: RouteAction) -> float | None:
    """How long one attempt may wait for its response head (``timeouts.response``, or the
    ``Retry``'s own ``timeout`` when shorter); ``None``: unbounded."""
    retry = action.retry
    limits = [t for t in (action.response_timeout, retry and retry.timeout) if t]
    return min(limits) if limits else None


def route_h2_request(
    policy: OutboundPolicyModel, request: RequestView, rng: UniformSource
) -> PolicyRoute:
    """Route ``request``: the most specific rule, a backend chosen by weight, its timeouts."""
    found = find_route(h2_routes(policy), request)
    if found is None:
        return PolicyRoute("no_route")
    rule = found[1]
    action = rule.action
    request_limit, attempt_limit = request_timeout(action), attempt_timeout(action)
    limits = [t for t in (action.request_timeout, action.response_timeout) if t]
    backend = action.backends.choose(rng)
    return PolicyRoute(
        "no_backend" if backend is None else "backend",
        action,
        backend,
        min(limits) if limits else None,
        policy.failure_accrual if backend is not None else None,
        request_limit,
        attempt_limit,
        _matched_prefix(rule, request),
    )


@dataclass(frozen=True, slots=True)
class DirectedRoute:
    """A policy route's limits for one request once its ``l5d-*`` directives are applied."""

    #: The whole exchange, retries and backoff included.
    request_timeout: float | None = None
    #: Each attempt, until its response head arrives.
    attempt_timeout: float | None = None
    #: The retry rule; ``None`` (or ``max_retries == 0``) sends one attempt only.
    retry: RetryCondition | None = None
    #: The wait between attempts (policy ``Retry.backoff``); ``None``: retry at once.
    backoff: Backoff | None = None


def directed_retry(
    route: RetryCondition | None, directives: OutboundDirectives
) -> RetryCondition | None:
    """The route's ``Retry`` with the ``l5d-retry-*`` overrides a request carried.

    A request may turn retries on for a route without a ``Retry`` by naming what to retry
    (``l5d-retry-http``/``-grpc``) or how often (``l5d-retry-limit``); a timeout alone does
    not make a route retry.
    """
    d = directives
    names_retry = (d.retry_http, d.retry_grpc, d.retry_limit) != (None, None, None)
    if not names_retry and (route is None or d.retry_timeout is None):
        return route
    condition = route or RetryCondition()
    if d.retry_http is not None:
        condition = dataclasses.replace(condition, status_ranges=d.retry_http)
    if d.retry_grpc is not None:
        condition = dataclasses.replace(condition, grpc_codes=d.retry_grpc)
    if d.retry_limit is not None:
        condition = dataclasses.replace(condition, max_retries=d.retry_limit)
    if d.retry_timeout is not None:
        condition = dataclasses.replace(condition, timeout=d.retry_timeout)
    return condition


def direct(decision: PolicyRoute, directives: OutboundDirectives | None) -> DirectedRoute:
    """``decision``'s timeouts and retry, overridden by ``directives`` where given.

    ``directives`` must only be passed when the route allows l5d request headers
    (``allow_l5d_request_headers``); ``None`` keeps the route's own settings.
    """
    action = decision.action
    d = directives if directives is not None else OutboundDirectives()
    request_limit = d.request_timeout or decision.request_timeout
    retry = directed_retry(action.retry if action is not None else None, d)
    attempt_limit = decision.attempt_timeout
    for limit in (d.response_timeout, retry and retry.timeout):
        if limit:
            attempt_limit = min(attempt_limit or limit, limit)
    if retry is not None and retry.max_retries <= 0:
        retry = None
    backoff = action.retry_backoff if action is not None and retry is not None else None
    return DirectedRoute(request_limit or None, attempt_limit or None, retry, backoff)
