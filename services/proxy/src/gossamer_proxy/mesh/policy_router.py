"""Routing one outbound HTTP request by its target's ``OutboundPolicy`` (sans-io).

Linkerd routes outbound HTTP by the ServiceProfile when the profile has routes or
``dst_overrides``, and otherwise by the policy's routes (linkerd-wire.md §9 outbound step 3).
When the policy only carries the routes the controller synthesizes itself (metadata
``default``: ``http``, ``egress-fallback``…) they send everything to the target's own
service or address, which is exactly what profile-based discovery already does; the policy
takes over only when an ``HTTPRoute`` resource is attached to the Service, or when the
target is governed by an ``EgressNetwork`` (:func:`routes_from_resources`).

Which of the policy's routes apply depends on the protocol, as in Linkerd's outbound stack
once the protocol is known: HTTP/1 requests use the ``http1`` routes (:func:`http_routes`),
HTTP/2 and gRPC streams the ``http2`` routes of a ``detect``/``http2`` policy and the
``grpc`` routes (``GRPCRoute``, matched on ``POST /<service>/<method>``) of a ``grpc`` one
(:func:`h2_routes`); a policy for the other protocol still describes the same Service, so
its routes apply rather than none.

:func:`route_request` then picks the most specific rule (Gateway API precedence, see
:mod:`.routes`) and one backendRef by weight, and says how long the request may take:
``timeouts.request`` bounds the whole exchange (retries included), ``timeouts.response`` (or
the ``Retry``'s own timeout, when shorter) each attempt until its response head.
:func:`direct` folds in what the app asked through ``l5d-*`` request headers, on routes
that allow it. Nothing here does I/O or reads a clock; randomness comes in as an argument.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal

from gossamer_proxy.mesh.authz import MetaLabels
from gossamer_proxy.mesh.backoff import Backoff, UniformSource
from gossamer_proxy.mesh.l5d_headers import OutboundDirectives
from gossamer_proxy.mesh.outbound_policy import (
    BackendSpec,
    FailureAccrualSpec,
    OutboundPolicyModel,
    RouteAction,
)
from gossamer_proxy.mesh.profile import Profile
from gossamer_proxy.mesh.request import RequestView
from gossamer_proxy.mesh.retry import RetryCondition
from gossamer_proxy.mesh.routes import HttpRoute, RouteRule, find_route

__all__ = [
    "DirectedRoute",
    "PolicyRoute",
    "attempt_timeout",
    "direct",
    "directed_retry",
    "h2_routes",
    "http_routes",
    "policy_applies",
    "route_request",
    "routes_from_resources",
    "source_workload",
]

EGRESS_NETWORK = "EgressNetwork"

Verdict = Literal["backend", "no_route", "no_backend"]


@dataclass(frozen=True, slots=True)
class PolicyRoute:
    """Where one request goes under the policy, and within what time.

    ``verdict`` is ``backend`` (send to :attr:`backend`), ``no_route`` (no rule matches:
    Linkerd answers 404) or ``no_backend`` (the rule's distribution is empty or every
    weight is 0: nothing may serve it, 503).
    """

    verdict: Verdict
    action: RouteAction | None = None
    backend: BackendSpec | None = None
    #: Seconds until the proxy gives up with 504 (the shorter of request/response timeouts).
    timeout: float | None = None
    #: The policy's failure accrual; when set, 5xx responses also count as failures.
    accrual: FailureAccrualSpec | None = None
    #: ``timeouts.request``: the whole exchange, retries included.
    request_timeout: float | None = None
    #: Per attempt: ``timeouts.response``, or the retry's own ``timeout`` when shorter.
    attempt_timeout: float | None = None
    #: The ``PathPrefix`` the rule matched by (``"/"`` without a path match; ``None`` for
    #: exact/regex), for redirects that replace the matched prefix.
    matched_prefix: str | None = "/"
    #: The policy's own metadata (the Service): the ``parent_*`` labels of route metrics.
    parent: MetaLabels | None = None
    #: Routed by a ``GRPCRoute`` (``outbound_grpc_route_*`` rather than ``…_http_…``).
    grpc: bool = False


def http_routes(policy: OutboundPolicyModel) -> tuple[HttpRoute[RouteAction], ...]:
    """The routes that apply to an HTTP/1 request under ``policy``.

    ``detect`` and ``http1`` carry HTTP/1 routes; an ``http2``-only policy's routes still
    describe the same Service, so an HTTP/1 client is routed by them rather than not at all.
    Opaque and TLS policies have no HTTP routes.
    """
    if policy.protocol in ("detect", "http1"):
        return policy.http1_routes
    if policy.protocol == "http2":
        return policy.http2_routes
    return ()


def h2_routes(policy: OutboundPolicyModel) -> tuple[HttpRoute[RouteAction], ...]:
    """The routes that apply to an HTTP/2 (or gRPC) request under ``policy``."""
    if policy.protocol in ("detect", "http2"):
        return policy.http2_routes
    if policy.protocol == "grpc":
        return policy.grpc_routes
    if policy.protocol == "http1":
        return policy.http1_routes
    return ()


def routes_from_resources(policy: OutboundPolicyModel | None, *, http2: bool = False) -> bool:
    """Whether ``policy`` has HTTP routes from a resource (an ``HTTPRoute``), not defaults.

    An EgressNetwork's policy always routes: even its default route decides (its
    ``trafficPolicy``: forward, or refuse with 403).
    """
    if policy is None:
        return False
    if policy.meta.kind == EGRESS_NETWORK:
        return True
    for route in h2_routes(policy) if http2 else http_routes(policy):
        for rule in route.rules:
            if rule.action.meta.kind != "default":
                return True
            break
    return False


def policy_applies(
    profile: Profile | None, policy: OutboundPolicyModel | None, *, http2: bool = False
) -> bool:
    """Whether ``policy`` routes this target's requests (rather than the ServiceProfile)."""
    if profile is not None and (profile.routes or len(profile.dst_overrides) > 0):
        return False
    return routes_from_resources(policy, http2=http2)


def _timeout(action: RouteAction) -> float | None:
    # Without policy retries an attempt is the whole request, so ``request`` (whole
    # exchange) and ``response`` (one backend attempt) bound the same span; the shorter wins.
    # A zero duration means "no timeout", as in Gateway API.
    limits = [t for t in (action.request_timeout, action.response_timeout) if t]
    return min(limits) if limits else None


def attempt_timeout(action: RouteAction) -> float | None:
    """How long one attempt may wait for its response head (``timeouts.response``, or the
    ``Retry``'s own ``timeout`` when shorter); ``None``: unbounded."""
    limits = [t for t in (action.response_timeout, action.retry and action.retry.timeout) if t]
    return min(limits) if limits else None


def _matched_prefix(rule: RouteRule[RouteAction], request: RequestView) -> str | None:
    best: tuple[tuple[int, ...], str | None] | None = None
    for match in rule.matches:
        rank = match.rank(request)
        if rank is None:
            continue
        path = match.path
        prefix = "/" if path is None else (path.value if path.kind == "prefix" else None)
        if best is None or rank > best[0]:
            best = (rank, prefix)
    return "/" if best is None else best[1]


def route_request(
    policy: OutboundPolicyModel, request: RequestView, rng: UniformSource, *, http2: bool = False
) -> PolicyRoute:
    """Route ``request``: the matching rule, a backend chosen by weight, its timeouts."""
    found = find_route(h2_routes(policy) if http2 else http_routes(policy), request)
    grpc = http2 and policy.protocol == "grpc"
    if found is None:
        return PolicyRoute("no_route", parent=policy.meta, grpc=grpc)
    action = found[1].action
    timeout, request_timeout = _timeout(action), action.request_timeout or None
    attempt_limit, prefix = attempt_timeout(action), _matched_prefix(found[1], request)
    backend = action.backends.choose(rng)
    return PolicyRoute(
        "no_backend" if backend is None else "backend",
        action,
        backend,
        timeout,
        policy.failure_accrual if backend is not None else None,
        request_timeout,
        attempt_limit,
        prefix,
        policy.meta,
        grpc,
    )


def source_workload(policy_workload: str, destination_context: str) -> str:
    """The ``TrafficSpec.source_workload`` this proxy sends.

    ``LINKERD2_PROXY_POLICY_WORKLOAD`` (``{"ns":…,"pod":…}``) when set, as Linkerd's proxy
    does; otherwise it is derived from the destination context token (``{"ns":…,"pod":…,
    "nodeName":…}``), so routes scoped to the client's namespace still apply. Neither set
    (or unparsable) gives ``""``, which the controller treats as an unknown client.
    """
    if policy_workload:
        return policy_workload
    try:
        context = json.loads(destination_context) if destination_context else None
    except ValueError:
        return ""
    if not isinstance(context, dict) or not isinstance(context.get("ns"), str):
        return ""
    workload = {"ns": context["ns"]}
    if isinstance(context.get("pod"), str):
        workload["pod"] = context["pod"]
    return json.dumps(workload, separators=(",", ":"))


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
