"""Opaque and TLS routes of an outbound policy: which connections they govern, and their metrics.

A non-HTTP outbound connection follows its policy's routes (:mod:`..mesh.tcp_policy`) when
they come from resources: a ``TCPRoute`` or ``TLSRoute`` attached to the Service, or any
route of an ``EgressNetwork`` (whose default route applies its ``trafficPolicy``). The
routes the controller synthesizes for a plain Service (``default``) send everything to the
Service itself, which discovery's balancing already does, ServiceProfile included.

A connection a route carries is counted in ``outbound_tcp_route_open_total`` (opaque routes)
or ``outbound_tls_route_open_total`` (TLS routes); one the policy refuses in
``outbound_{tcp,tls}_route_close_total`` with ``error``: ``forbidden``/``invalid`` (a
filter: ``trafficPolicy: Deny``, an unresolvable backendRef), ``no_route`` (no TLS route
matches the SNI), ``no_backend`` (every weight is 0), ``not_tls`` (a TLS port whose client
sent no ClientHello in time). Labels name the parent (the Service or EgressNetwork) and the
route (empty when none matched); the SNI is not a label, so a client cannot grow the series.
"""

from __future__ import annotations

from gossamer_common.metrics import Counter, Family, Registry

from ..mesh.outbound_policy import OutboundPolicyModel
from ..mesh.policy_router import EGRESS_NETWORK
from ..mesh.tcp_policy import TcpRoute

__all__ = ["TcpRouteMetrics", "policy_tcp_routes"]

_LABELS = (
    "parent_group",
    "parent_kind",
    "parent_name",
    "parent_port",
    "route_group",
    "route_kind",
    "route_name",
)


def policy_tcp_routes(
    policy: OutboundPolicyModel | None,
) -> tuple[tuple[TcpRoute, ...], bool] | None:
    """The routes a non-HTTP connection follows under ``policy`` and whether they are TLS
    routes, or ``None`` when only default routes apply (discovery balances as before)."""
    if policy is None:
        return None
    tls = policy.protocol == "tls"
    routes = policy.tls_routes if tls else policy.opaque_routes
    if not routes:
        return None
    if policy.meta.kind == EGRESS_NETWORK or any(r.meta.kind != "default" for r in routes):
        return routes, tls
    return None


class TcpRouteMetrics:
    def __init__(self, registry: Registry) -> None:
        self._open: dict[bool, Family[Counter]] = {}
        self._close: dict[bool, Family[Counter]] = {}
        for tls, name in ((False, "tcp"), (True, "tls")):
            kind = "TLS" if tls else "opaque"
            self._open[tls] = registry.counter_family(
                f"outbound_{name}_route_open_total",
                f"Total count of outbound connections routed by a policy's {kind} route.",
                _LABELS,
            )
            self._close[tls] = registry.counter_family(
                f"outbound_{name}_route_close_total",
                f"Total count of outbound connections a policy's {kind} routes refused, by error.",
                (*_LABELS, "error"),
            )

    @staticmethod
    def _labels(policy: OutboundPolicyModel, route: TcpRoute | None, port: int) -> tuple[str, ...]:
        p = policy.meta
        if route is None:
            return (p.group, p.kind, p.name, str(port), "", "", "")
        r = route.meta
        return (p.group, p.kind, p.name, str(port), r.group, r.kind, r.name)

    def opened(self, policy: OutboundPolicyModel, route: TcpRoute, port: int, *, tls: bool) -> None:
        self._open[tls].labels(*self._labels(policy, route, port)).value += 1

    def refused(
        self,
        policy: OutboundPolicyModel,
        route: TcpRoute | None,
        port: int,
        error: str,
        *,
        tls: bool,
    ) -> None:
        self._close[tls].labels(*self._labels(policy, route, port), error).value += 1
