"""Outbound discovery: from an original destination to a balanced endpoint.

Linkerd's outbound stack (linkerd-wire.md §9 outbound steps 1-4), driven by the shared
watches of :class:`~gossamer_proxy.mesh.discovery.DestinationClient`:

* an original destination outside ``LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS`` is
  forwarded as it is (the ``forward`` backend), and so is one the destination service does
  not answer for in time, or rejects (``INVALID_ARGUMENT``: not a cluster address);
* otherwise ``GetProfile(ip:port)``: a profile naming a service (ClusterIP) leads to
  ``Get(<fqn>:<port>)`` and a balanced :class:`~.backend.Backend` of its endpoints, which is
  how ClusterIP traffic works without kube-proxy; a profile for a pod IP carries the
  ``endpoint`` itself (identity, hints), used without balancing;
* ``dst_overrides`` split requests between authorities, each resolved with its own ``Get``;
* a balanced pick whose connect fails can be re-dispatched (:meth:`.plan.Pick.redispatch`):
  the same backend picks again, passing over the endpoints that already failed;
* with a policy service, ``OutboundPolicies.Watch`` per covered target: when the Service
  has ``HTTPRoute`` resources (and the profile has neither routes nor ``dst_overrides``),
  HTTP requests are routed by them (:mod:`..mesh.policy_router`) to weighted backends,
  each again a balanced :class:`~.backend.Backend` (with the policy's failure accrual).

Watches keep their last known state across control-plane outages, so traffic keeps
flowing to the last known endpoints. Backends are shared by every connection to the same
authority and dropped after the discovery idle timeout without users.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final

import structlog
from gossamer_api.transport_header import SessionProtocol
from gossamer_common.metrics import Family, Gauge, Registry

from ..config import Endpoint
from ..mesh.accrual import ConsecutiveFailures
from ..mesh.authz import MetaLabels
from ..mesh.backoff import UniformSource
from ..mesh.balancer import Outcome
from ..mesh.endpoints import Address
from ..mesh.endpoints import Endpoint as MeshEndpoint
from ..mesh.idle import IdleTracker
from ..mesh.outbound_policy import (
    BackendSpec,
    FailureAccrualSpec,
    OutboundPolicyModel,
    RouteAction,
)
from ..mesh.policy_router import (
    PolicyRoute,
    h2_routes,
    http_routes,
    route_request,
    routes_from_resources,
)
from ..mesh.profile import Profile, service_authority
from ..mesh.request import RequestView
from ..mesh.retry_budget import RetryBudget
from ..mesh.watch_state import WatchState
from .backend import Backend
from .plan import EndpointPlan, Pick, endpoint_plan, forward_pick
from .policy_route_metrics import (
    BALANCER_LABELS,
    PolicyRouteMetrics,
    balancer_labels,
    service_meta,
)
from .route_metrics import RouteMetrics
from .tcp_routes import TcpRouteMetrics

if TYPE_CHECKING:  # made by the app only with a control plane (they import grpclib)
    from ..mesh.discovery import DestinationClient
    from ..mesh.policy_watch import OutboundPolicyClient

__all__ = ["OutboundDiscovery", "TargetHandle", "parse_networks"]

_log = structlog.get_logger("gossamer.proxy.outbound")
_PLAN_CACHE_LIMIT: Final = 10_000

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Backends are shared per authority *and* failure-accrual settings: a Service that opts in
#: to response-based accrual must not change how other parents' traffic ejects endpoints.
BackendKey = tuple[str, FailureAccrualSpec | None]


def parse_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    """Parse the profile networks setting; a bad entry raises ``ValueError`` naming it."""
    networks: list[Network] = []
    for cidr in cidrs:
        text = cidr.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ValueError(f"invalid profile network {text!r}: {exc}") from None
    return tuple(networks)


class _BackendEntry:
    __slots__ = ("backend", "idle_since", "users")

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.users = 0
        self.idle_since = 0.0


class OutboundDiscovery:
    """Resolves outbound targets through the destination service; owns the backends."""

    def __init__(
        self,
        client: DestinationClient,
        *,
        networks: Sequence[str],
        mesh_identity: bool,
        registry: Registry | None = None,
        rng: UniformSource | None = None,
        profile_wait: float = 3.0,
        failfast_timeout: float = 3.0,
        queue_capacity: int = 100,
        idle_timeout: float = 5.0,
        policies: OutboundPolicyClient | None = None,
    ) -> None:
        self.client = client
        #: ``OutboundPolicies.Watch`` per target (``None``: no policy service configured).
        self.policies = policies
        self._policy_users: IdleTracker[tuple[str, int]] = IdleTracker(idle_timeout)
        self.networks = parse_networks(networks)
        self.mesh_identity = mesh_identity
        self.rng: UniformSource = rng if rng is not None else random.Random()  # noqa: S311
        self.profile_wait = profile_wait
        self.failfast_timeout = failfast_timeout
        self.queue_capacity = queue_capacity
        self.idle_timeout = idle_timeout
        self._backends: dict[BackendKey, _BackendEntry] = {}
        self._plans: dict[tuple[MeshEndpoint, SessionProtocol | None], EndpointPlan] = {}
        #: Retry budgets per ServiceProfile (by fully qualified name), shared by its routes.
        self._budgets: dict[str, RetryBudget] = {}
        self._gauge: Family[Gauge] | None = None
        self.route_metrics: RouteMetrics | None = None
        #: ``outbound_{http,grpc}_route_*`` for policy-routed requests (``None``: no registry).
        self.policy_route_metrics: PolicyRouteMetrics | None = None
        #: The ``(parent, backend)`` policy metadata a balancer was last picked for.
        self._backend_meta: dict[str, tuple[MetaLabels | None, MetaLabels | None]] = {}
        self._gauge_series: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self.tcp_route_metrics: TcpRouteMetrics | None = None
        if registry is not None:
            self.route_metrics = RouteMetrics(registry)
            self.policy_route_metrics = PolicyRouteMetrics(registry)
            self.tcp_route_metrics = TcpRouteMetrics(registry)
            self._gauge = registry.gauge_family(
                "outbound_http_balancer_endpoints",
                "Number of endpoints of an outbound balancer, by state (ready or pending)",
                BALANCER_LABELS,
            )

    def covers(self, target: Endpoint) -> bool:
        try:
            ip = ipaddress.ip_address(target.host)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def resolves(self, target: Endpoint) -> bool:
        """Whether the destination service says anything about ``target``: a profile (inside
        the profile networks) or, with a policy service, a policy (any IP address)."""
        return self.covers(target) or (self.policies is not None and _is_ip(target.host))

    def target(self, target: Endpoint) -> TargetHandle:
        """A handle for one client connection's original destination; :meth:`close` it."""
        covered = self.covers(target)
        policy = None
        if self.policies is not None and (covered or _is_ip(target.host)):
            # Policy is looked up for every address, as Linkerd's proxy does: outside the
            # profile networks it says whether an EgressNetwork allows the traffic.
            now = asyncio.get_running_loop().time()
            self._policy_users.acquire((target.host, target.port), now)
            policy = self.policies.watch(target.host, target.port)
        if not covered:
            return TargetHandle(self, target, None, policy)
        return TargetHandle(self, target, self.client.acquire_profile(str(target)), policy)

    def release_policy(self, target: Endpoint, now: float) -> None:
        if self.policies is not None:
            self._policy_users.release((target.host, target.port), now)

    # -- backends ----------------------------------------------------------------------------

    def acquire_backend(
        self,
        authority: str,
        accrual: FailureAccrualSpec | None = None,
        *,
        capacity: int | None = None,
        failfast_timeout: float | None = None,
    ) -> Backend:
        """The shared backend of ``authority`` (with ``accrual``, else Linkerd's default)."""
        key = (authority, accrual)
        entry = self._backends.get(key)
        if entry is None:
            state = self.client.acquire_endpoints(authority)
            entry = _BackendEntry(
                Backend(
                    authority,
                    state,
                    rng=self.rng,
                    capacity=self.queue_capacity if capacity is None else capacity,
                    failfast_timeout=(
                        self.failfast_timeout if failfast_timeout is None else failfast_timeout
                    ),
                    accrual=accrual.new if accrual is not None else ConsecutiveFailures,
                )
            )
            self._backends[key] = entry
        entry.users += 1
        return entry.backend

    def release_backend(
        self, authority: str, now: float, accrual: FailureAccrualSpec | None = None
    ) -> None:
        entry = self._backends.get((authority, accrual))
        if entry is not None:
            entry.users -= 1
            if entry.users <= 0:
                entry.idle_since = now

    def backends(self, accrual: FailureAccrualSpec | None = None) -> dict[str, Backend]:
        """The live backends by authority (those with ``accrual``; default: Linkerd's)."""
        return {a: e.backend for (a, spec), e in self._backends.items() if spec == accrual}

    def budget(self, profile: Profile, now: float) -> RetryBudget | None:
        if profile.retry_budget is None:
            return None
        budget = self._budgets.get(profile.fully_qualified_name)
        if budget is None or budget.config != profile.retry_budget:
            budget = RetryBudget(profile.retry_budget, now)
            self._budgets[profile.fully_qualified_name] = budget
        return budget

    def plan(self, meta: MeshEndpoint, session: SessionProtocol | None) -> EndpointPlan:
        key = (meta, session)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _PLAN_CACHE_LIMIT:
                self._plans.clear()
            plan = endpoint_plan(meta, session_protocol=session, mesh_identity=self.mesh_identity)
            self._plans[key] = plan
        return plan

    def housekeeping(self, now: float) -> None:
        """Drop backends and policy watches unused for the idle timeout; refresh gauges."""
        if self.policies is not None:
            for host, port in self._policy_users.expired(now):
                self.policies.forget(host, port)
        counts: dict[str, tuple[int, int]] = {}
        for key, entry in list(self._backends.items()):
            authority = key[0]
            if entry.users <= 0 and now - entry.idle_since >= self.idle_timeout:
                del self._backends[key]
                self.client.release_endpoints(authority)
                asyncio.ensure_future(entry.backend.close())  # noqa: RUF006 - close is bounded
                counts.setdefault(authority, (0, 0))
                continue
            ready, pending = entry.backend.counts()
            # The same endpoints under two accrual settings: report the freshest view.
            counts[authority] = max(counts.get(authority, (0, 0)), (ready, pending))
        if self._gauge is not None:
            self._refresh_gauge(self._gauge, counts)

    def note_backend(
        self, authority: str, parent: MetaLabels | None, backend: MetaLabels | None
    ) -> None:
        """A policy picked ``authority`` as ``backend`` of ``parent`` (for the gauge's labels)."""
        known = self._backend_meta.get(authority)
        if known is None or known[0] is not parent or known[1] is not backend:
            self._backend_meta[authority] = (parent, backend)

    def _refresh_gauge(self, gauge: Family[Gauge], counts: dict[str, tuple[int, int]]) -> None:
        live = {key[0] for key in self._backends}
        for authority, (ready, pending) in counts.items():
            old = self._gauge_series.pop(authority, None)
            if authority not in live:
                self._backend_meta.pop(authority, None)
                if old is not None:
                    gauge.remove(*old[0])
                    gauge.remove(*old[1])
                continue
            service = service_meta(authority)
            parent, backend = self._backend_meta.get(authority, (service, service))
            series = (
                balancer_labels(parent, backend, "ready"),
                balancer_labels(parent, backend, "pending"),
            )
            if old is not None and old != series:
                gauge.remove(*old[0])
                gauge.remove(*old[1])
            self._gauge_series[authority] = series
            gauge.labels(*series[0]).set(ready)
            gauge.labels(*series[1]).set(pending)

    async def close(self) -> None:
        entries = list(self._backends.values())
        self._backends.clear()
        for entry in entries:
            await entry.backend.close()
        await self.client.close()
        if self.policies is not None:
            await self.policies.close()


class TargetHandle:
    """One client connection's view of its original destination."""

    __slots__ = (
        "_authorities",
        "_closed",
        "_owner",
        "_policy",
        "_policy_wait",
        "_profile",
        "target",
    )

    def __init__(
        self,
        owner: OutboundDiscovery,
        target: Endpoint,
        profile: WatchState[Profile | None] | None,
        policy: WatchState[OutboundPolicyModel | None] | None = None,
    ) -> None:
        self._owner = owner
        self.target = target
        self._profile = profile
        self._policy = policy
        #: The one bounded wait for the first policy answer, shared by every caller that
        #: arrives meanwhile (an HTTP/2 connection's first burst of streams); once it is
        #: over, callers get what is known without waiting again.
        self._policy_wait: asyncio.Task[None] | None = None
        self._authorities: dict[BackendKey, Backend] = {}
        self._closed = False

    async def profile(self) -> Profile | None:
        """The target's profile, waiting (boundedly) for the destination service's first answer."""
        state = self._profile
        if state is None:
            return None
        if state.version == 0 and state.final is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._owner.profile_wait):
                    await state.wait_changed(0)
            if state.version == 0:
                _log.info("profile_unresolved_forwarding", target=str(self.target))
        return state.value

    async def policy(self) -> OutboundPolicyModel | None:
        """The target's outbound policy, waiting (boundedly) for the first answer.

        Every caller until the first answer (or the wait's end) waits for it, however many
        arrive concurrently; after that nobody waits again. ``None``: no policy service, no
        policy for this target (``NOT_FOUND``), or no answer in time; the last known policy
        is kept while the control plane is away.
        """
        state = self._policy
        if state is None:
            return None
        if state.version == 0 and state.final is None:
            wait = self._policy_wait
            if wait is None:
                if self._closed:
                    return state.value
                wait = self._policy_wait = asyncio.ensure_future(self._first_policy(state))
            if not wait.done():
                # Not shield(): a cancelled caller must not cancel the others' wait, and a
                # wait cancelled by close() must not raise in its callers.
                await asyncio.wait((wait,))
        return state.value

    async def _first_policy(self, state: WatchState[OutboundPolicyModel | None]) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._owner.profile_wait):
                await state.wait_changed(0)
        if state.version == 0:
            _log.info("outbound_policy_unresolved", target=str(self.target))

    async def policy_route(
        self, profile: Profile | None, request: Callable[[], RequestView]
    ) -> PolicyRoute | None:
        """Route a request by the policy's ``HTTPRoute`` rules, or ``None`` to use the profile.

        ``request`` builds the request's view, only needed when the policy routes it.

        A ServiceProfile with routes or ``dst_overrides`` takes precedence, as in Linkerd;
        so does a policy without ``HTTPRoute`` resources (its default route is the service).
        """
        if profile is not None and (profile.routes or len(profile.dst_overrides) > 0):
            return None
        policy = await self.policy()
        if not routes_from_resources(policy):
            return None
        assert policy is not None
        return route_request(policy, request(), self._owner.rng)

    def default_route(self, *, http2: bool = False) -> tuple[MetaLabels, RouteAction] | None:
        """The policy's own default route, for traffic no ``HTTPRoute`` routes.

        Such requests are balanced as before (the profile's way), but Linkerd still counts
        them on the Service's default route (``route_kind="default"``) in the
        ``outbound_*_route_*`` families; this is that route (``None`` until the policy is
        known, or when resource routes apply).
        """
        state = self._policy
        policy = state.value if state is not None else None
        if policy is None or routes_from_resources(policy, http2=http2):
            return None
        for route in h2_routes(policy) if http2 else http_routes(policy):
            for rule in route.rules:
                return policy.meta, rule.action
        return None

    async def pick_backend(
        self,
        spec: BackendSpec,
        accrual: FailureAccrualSpec | None,
        session: SessionProtocol | None,
    ) -> Pick:
        """Pick an endpoint of a policy backend: its ``forward`` address, or its balancer."""
        owner = self._owner
        if spec.discovery_path is None:
            forward = spec.forward
            assert forward is not None  # compile_outbound_policy guarantees one of the two
            if forward.identity is not None or forward.opaque_transport_port is not None:
                return Pick(owner.plan(forward, session), str(self.target), None)
            endpoint = Endpoint(str(forward.ip), forward.port)
            return forward_pick(endpoint, mesh_identity=owner.mesh_identity)
        policy = self._policy.value if self._policy is not None else None
        owner.note_backend(spec.discovery_path, policy.meta if policy else None, spec.meta)
        pick = await self._balanced(
            spec.discovery_path,
            accrual,
            session,
            capacity=spec.queue_capacity or None,
            failfast_timeout=spec.failfast_timeout or None,
        )
        # A Service that configured failure accrual counts failed responses too (and so do
        # the picks that re-dispatch this one: Pick.redispatch carries the flag over).
        pick.responses_eject = accrual is not None
        return pick

    def default_authority(self, profile: Profile | None) -> str | None:
        return service_authority(profile, self.target.port)

    def choose_authority(self, profile: Profile | None) -> str | None:
        """The authority one request goes to: a ``dst_overrides`` pick, else the service."""
        if profile is not None and len(profile.dst_overrides) > 0:
            chosen = profile.dst_overrides.choose(self._owner.rng)
            if chosen is not None:
                return chosen
        return self.default_authority(profile)

    async def pick(
        self,
        profile: Profile | None,
        authority: str | None,
        session: SessionProtocol | None,
    ) -> Pick:
        """Choose where one request (or connection) goes; raises ``ProxyError`` on 503/504."""
        owner = self._owner
        if authority is None:
            if profile is not None and profile.endpoint is not None:
                plan = owner.plan(profile.endpoint, session)
                return Pick(plan, str(self.target), None)
            return forward_pick(self.target, mesh_identity=owner.mesh_identity)
        return await self._balanced(authority, None, session)

    async def _balanced(
        self,
        authority: str,
        accrual: FailureAccrualSpec | None,
        session: SessionProtocol | None,
        *,
        capacity: int | None = None,
        failfast_timeout: float | None = None,
    ) -> Pick:
        owner = self._owner
        key = (authority, accrual)
        backend = self._authorities.get(key)
        if backend is None:
            if self._closed:
                return forward_pick(self.target, mesh_identity=owner.mesh_identity)
            backend = self._authorities[key] = owner.acquire_backend(
                authority, accrual, capacity=capacity, failfast_timeout=failfast_timeout
            )
        return await self._dispatch(backend, authority, session, ())

    async def _dispatch(
        self,
        backend: Backend,
        authority: str,
        session: SessionProtocol | None,
        failed: tuple[Address, ...],
    ) -> Pick:
        """One pick from ``backend``, passing over the ``failed`` endpoints if it can."""
        dispatch = await backend.acquire(failed)
        plan = self._owner.plan(dispatch.meta, session)

        def finish(outcome: Outcome, latency: float | None) -> None:
            backend.finish(dispatch, outcome, latency)

        def repick() -> Awaitable[Pick]:
            return self._dispatch(backend, authority, session, (*failed, dispatch.key))

        return Pick(plan, authority, finish, repick)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._policy_wait is not None:
            self._policy_wait.cancel()
        owner = self._owner
        now = asyncio.get_running_loop().time()
        if self._profile is not None:
            owner.client.release_profile(str(self.target))
        if self._policy is not None:
            owner.release_policy(self.target, now)
        for authority, accrual in self._authorities:
            owner.release_backend(authority, now, accrual)
        self._authorities.clear()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
