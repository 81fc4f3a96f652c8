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
* ``dst_overrides`` split requests between authorities, each resolved with its own ``Get``.

Watches keep their last known state across control-plane outages, so traffic keeps
flowing to the last known endpoints. Backends are shared by every connection to the same
authority and dropped after the discovery idle timeout without users.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
from collections.abc import Sequence
from typing import Final

import structlog
from gossamer_api.transport_header import SessionProtocol
from gossamer_common.metrics import Family, Gauge, Registry

from ..config import Endpoint
from ..mesh.backoff import UniformSource
from ..mesh.balancer import Outcome
from ..mesh.discovery import DestinationClient, service_authority
from ..mesh.endpoints import Endpoint as MeshEndpoint
from ..mesh.profile import Profile
from ..mesh.retry_budget import RetryBudget
from ..mesh.watch_state import WatchState
from .backend import Backend
from .plan import EndpointPlan, Pick, endpoint_plan, forward_pick
from .route_metrics import RouteMetrics

__all__ = ["OutboundDiscovery", "TargetHandle", "parse_networks"]

_log = structlog.get_logger("gossamer.proxy.outbound")
_PLAN_CACHE_LIMIT: Final = 10_000

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
    ) -> None:
        self.client = client
        self.networks = parse_networks(networks)
        self.mesh_identity = mesh_identity
        self.rng: UniformSource = rng if rng is not None else random.Random()  # noqa: S311
        self.profile_wait = profile_wait
        self.failfast_timeout = failfast_timeout
        self.queue_capacity = queue_capacity
        self.idle_timeout = idle_timeout
        self._backends: dict[str, _BackendEntry] = {}
        self._plans: dict[tuple[MeshEndpoint, SessionProtocol | None], EndpointPlan] = {}
        #: Retry budgets per ServiceProfile (by fully qualified name), shared by its routes.
        self._budgets: dict[str, RetryBudget] = {}
        self._gauge: Family[Gauge] | None = None
        self.route_metrics: RouteMetrics | None = None
        if registry is not None:
            self.route_metrics = RouteMetrics(registry)
            self._gauge = registry.gauge_family(
                "outbound_http_balancer_endpoints",
                "Number of endpoints of an outbound balancer, by state (ready or pending)",
                ("backend_authority", "endpoint_state"),
            )

    def covers(self, target: Endpoint) -> bool:
        try:
            ip = ipaddress.ip_address(target.host)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def target(self, target: Endpoint) -> TargetHandle:
        """A handle for one client connection's original destination; :meth:`close` it."""
        if not self.covers(target):
            return TargetHandle(self, target, None)
        return TargetHandle(self, target, self.client.acquire_profile(str(target)))

    # -- backends ----------------------------------------------------------------------------

    def acquire_backend(self, authority: str) -> Backend:
        entry = self._backends.get(authority)
        if entry is None:
            state = self.client.acquire_endpoints(authority)
            entry = _BackendEntry(
                Backend(
                    authority,
                    state,
                    rng=self.rng,
                    capacity=self.queue_capacity,
                    failfast_timeout=self.failfast_timeout,
                )
            )
            self._backends[authority] = entry
        entry.users += 1
        return entry.backend

    def release_backend(self, authority: str, now: float) -> None:
        entry = self._backends.get(authority)
        if entry is not None:
            entry.users -= 1
            if entry.users <= 0:
                entry.idle_since = now

    def backends(self) -> dict[str, Backend]:
        return {a: e.backend for a, e in self._backends.items()}

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
        """Drop backends unused for the idle timeout; refresh the endpoint gauges."""
        for authority, entry in list(self._backends.items()):
            if entry.users <= 0 and now - entry.idle_since >= self.idle_timeout:
                del self._backends[authority]
                self.client.release_endpoints(authority)
                asyncio.ensure_future(entry.backend.close())  # noqa: RUF006 - close is bounded
                if self._gauge is not None:
                    self._gauge.remove(authority, "ready")
                    self._gauge.remove(authority, "pending")
                continue
            if self._gauge is not None:
                ready, pending = entry.backend.counts()
                self._gauge.labels(authority, "ready").set(ready)
                self._gauge.labels(authority, "pending").set(pending)

    async def close(self) -> None:
        entries = list(self._backends.values())
        self._backends.clear()
        for entry in entries:
            await entry.backend.close()
        await self.client.close()


class TargetHandle:
    """One client connection's view of its original destination."""

    __slots__ = ("_authorities", "_closed", "_owner", "_profile", "target")

    def __init__(
        self,
        owner: OutboundDiscovery,
        target: Endpoint,
        profile: WatchState[Profile | None] | None,
    ) -> None:
        self._owner = owner
        self.target = target
        self._profile = profile
        self._authorities: dict[str, Backend] = {}
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
        backend = self._authorities.get(authority)
        if backend is None:
            if self._closed:
                return forward_pick(self.target, mesh_identity=owner.mesh_identity)
            backend = self._authorities[authority] = owner.acquire_backend(authority)
        dispatch = await backend.acquire()
        plan = owner.plan(dispatch.meta, session)

        def finish(outcome: Outcome, latency: float | None) -> None:
            backend.finish(dispatch, outcome, latency)

        return Pick(plan, authority, finish)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        owner = self._owner
        if self._profile is not None:
            owner.client.release_profile(str(self.target))
        now = asyncio.get_running_loop().time()
        for authority in self._authorities:
            owner.release_backend(authority, now)
        self._authorities.clear()
