"""Routing one outbound HTTP/2 or gRPC request by its target's ``OutboundPolicy`` (sans-io).

:mod:`.policy_router` routes HTTP/1 requests by the policy's ``http1`` routes. An HTTP/2
connection is routed by the routes for its protocol instead, as Linkerd's outbound stack
does once the protocol is known: a ``detect`` or ``http2`` policy by its ``http2`` routes
(``HTTPRoute``), a ``grpc`` policy by its ``grpc`` routes (``GRPCRoute``, matched on
``POST /<service>/<method>``); an ``http1``-only policy still describes the same Service, so
its routes apply rather than none.

The precedence rules are the HTTP/1 ones: a ServiceProfile with routes or ``dst_overrides``
wins, and only routes from a resource (not the controller's synthesized defaults) take
over from profile-based balancing. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from gossamer_proxy.mesh.backoff import UniformSource
from gossamer_proxy.mesh.outbound_policy import OutboundPolicyModel, RouteAction
from gossamer_proxy.mesh.policy_router import PolicyRoute
from gossamer_proxy.mesh.profile import Profile
from gossamer_proxy.mesh.request import RequestView
from gossamer_proxy.mesh.routes import HttpRoute, find_route

__all__ = ["attempt_timeout", "h2_routes", "policy_applies", "request_timeout", "route_h2_request"]


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

    Without a ``Retry`` there is one attempt, so ``request`` and ``response`` bound the same
    span and the shorter wins; with one, ``request`` bounds the exchange and ``response``
    each attempt (:func:`attempt_timeout`). Zero means "no timeout", as in Gateway API.
    """
    if action.retry is None:
        limits = [t for t in (action.request_timeout, action.response_timeout) if t]
        return min(limits) if limits else None
    return action.request_timeout or None


def attempt_timeout(action: RouteAction) -> float | None:
    """How long one attempt may wait for its response head when the route retries."""
    if action.retry is None:
        return None
    limits = [t for t in (action.response_timeout, action.retry.timeout) if t]
    return min(limits) if limits else None


def route_h2_request(
    policy: OutboundPolicyModel, request: RequestView, rng: UniformSource
) -> PolicyRoute:
    """Route ``request``: the most specific rule, a backend chosen by weight, its timeout."""
    found = find_route(h2_routes(policy), request)
    if found is None:
        return PolicyRoute("no_route")
    action = found[1].action
    timeout = request_timeout(action)
    backend = action.backends.choose(rng)
    if backend is None:
        return PolicyRoute("no_backend", action, timeout=timeout)
    return PolicyRoute("backend", action, backend, timeout, policy.failure_accrual)
