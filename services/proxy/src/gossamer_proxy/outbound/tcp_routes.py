"""Opaque TCP routes of an outbound policy: refusing what an EgressNetwork forbids (sans-io
decision, plus its metrics).

A connection whose original destination is governed by an ``EgressNetwork`` follows the
policy's opaque route: with a ``Forbidden`` filter (``trafficPolicy: Deny``; an ``Invalid``
one too) the proxy refuses the connection instead of connecting, as Linkerd's proxy does.
Each such connection is counted in ``outbound_tcp_route_open_total`` and each refusal in
``outbound_tcp_route_close_total`` with ``error="forbidden"`` (or ``"invalid"``), labelled
with the parent (the EgressNetwork) and the route.
"""

from __future__ import annotations

from gossamer_common.metrics import Counter, Family, Registry

from ..mesh.outbound_policy import OutboundPolicyModel, RouteAction
from ..mesh.policy_router import EGRESS_NETWORK

__all__ = ["TcpRouteMetrics", "egress_tcp_route", "refusal"]

_LABELS = (
    "parent_group",
    "parent_kind",
    "parent_name",
    "parent_port",
    "route_group",
    "route_kind",
    "route_name",
)


def egress_tcp_route(policy: OutboundPolicyModel | None) -> RouteAction | None:
    """The opaque route an EgressNetwork's policy sends a TCP connection by (else ``None``)."""
    if policy is None or policy.meta.kind != EGRESS_NETWORK:
        return None
    return policy.opaque


def refusal(action: RouteAction) -> str | None:
    """``"forbidden"``/``"invalid"`` when the route refuses connections, else ``None``."""
    for message in action.opaque_filters:
        kind = message.WhichOneof("kind")
        if kind in ("forbidden", "invalid"):
            return str(kind)
    return None


class TcpRouteMetrics:
    def __init__(self, registry: Registry) -> None:
        self._open: Family[Counter] = registry.counter_family(
            "outbound_tcp_route_open_total",
            "Total count of outbound TCP connections routed by a policy's opaque route.",
            _LABELS,
        )
        self._close: Family[Counter] = registry.counter_family(
            "outbound_tcp_route_close_total",
            "Total count of outbound TCP connections a policy's opaque route closed, by error.",
            (*_LABELS, "error"),
        )

    @staticmethod
    def _labels(policy: OutboundPolicyModel, action: RouteAction, port: int) -> tuple[str, ...]:
        p, r = policy.meta, action.meta
        return (p.group, p.kind, p.name, str(port), r.group, r.kind, r.name)

    def opened(self, policy: OutboundPolicyModel, action: RouteAction, port: int) -> None:
        self._open.labels(*self._labels(policy, action, port)).value += 1

    def refused(
        self, policy: OutboundPolicyModel, action: RouteAction, port: int, error: str
    ) -> None:
        self._close.labels(*self._labels(policy, action, port), error).value += 1
