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
when shorter) each attempt until its response head. :func:`.policy_router.direct` folds in what the
app asked through ``l5d-*`` request headers, on routes that allow it.
Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from gossamer_proxy.mesh.backoff import UniformSource
from gossamer_proxy.mesh.outbound_policy import OutboundPolicyModel, RouteAction
from gossamer_proxy.mesh.policy_router import PolicyRoute, _matched_prefix
from gossamer_proxy.mesh.profile import Profile
from gossamer_proxy.mesh.request import RequestView
from gossamer_proxy.mesh.routes import HttpRoute, find_route

__all__ = [
    "attempt_timeout",
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
