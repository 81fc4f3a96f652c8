"""EgressNetwork: which out-of-cluster addresses a client may reach, and how (pure).

An ``EgressNetwork`` (``policy.linkerd.io/v1alpha1``, linkerd-wire.md §7) names networks
outside the cluster (``networks[]{cidr, except[]}``; without ``networks``, everything
outside the cluster networks) and a ``trafficPolicy`` (``Allow``/``Deny``) for the traffic
no route of its own matches. The outbound policy API serves it for an original destination
that is no Service and lies outside the cluster networks (§3.3):

* :func:`select_egress_network` picks the EgressNetwork for an address as seen from a client
  namespace: the client namespace's own networks first, else those of the global egress
  namespace; among them the most specific matching network (longest prefix), then the
  oldest resource, then the first by name, as Linkerd's policy controller does.
* :func:`egress_policy` builds the ``OutboundPolicy``: protocol detection whose opaque and
  HTTP routes forward to the original destination (``Allow``) or refuse it (``Deny``: an
  opaque ``Forbidden`` filter, HTTP 403 "traffic not allowed" by a failure injector), with
  the HTTPRoutes whose parent is the EgressNetwork in front of that default route.
  Other Gateway API routes may have the EgressNetwork as parent too, as in Linkerd:

  - GRPCRoutes make the port gRPC (``protocol.grpc``): their rules first, then a default
    route that applies the trafficPolicy (``Deny``: ``PERMISSION_DENIED``);
  - a TCPRoute carries the port's opaque (non-HTTP) traffic in place of the trafficPolicy:
    its backendRefs are the EgressNetwork itself (the original destination) or Services;
  - TLSRoutes (without HTTPRoutes or GRPCRoutes) make the port ``tls``: a connection goes by
    the route whose hostnames match its SNI, else by a last route (any name) that applies
    the trafficPolicy (``Deny``: refused).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gossamer_api.proxy import (
    destination_pb2,
    grpc_route_pb2,
    http_route_pb2,
    meta_pb2,
    opaque_route_pb2,
    outbound_pb2,
)

from gossamer_destination import httproutes, tcp_routes
from gossamer_destination.endpoints import meta
from gossamer_destination.policy_outbound import (
    DETECT_TIMEOUT_SECONDS,
    FAILFAST_SECONDS,
    QUEUE_CAPACITY,
    balancer_backend,
    outbound_grpc_route,
    outbound_route,
    service_resource,
)
from gossamer_destination.profiles import Issues
from gossamer_destination.settings import DestinationSettings
from gossamer_destination.wire import tcp_address

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

KIND = "EgressNetwork"
DENIED_MESSAGE = "traffic not allowed"
GATEWAY_GROUP = "gateway.networking.k8s.io"
#: gRPC's PERMISSION_DENIED: what a denied gRPC call gets.
GRPC_PERMISSION_DENIED = 7
_EVERYWHERE: tuple[Network, ...] = (
    ipaddress.ip_network("0.0.0.0/0"),
    ipaddress.ip_network("::/0"),
)


class InvalidEgressNetworkError(ValueError):
    """The EgressNetwork cannot be enforced; it is skipped (and reported)."""


@dataclass(frozen=True, slots=True)
class EgressRule:
    """One ``networks[]`` entry: ``net`` minus its ``excepts``."""

    net: Network
    excepts: tuple[Network, ...] = ()

    def contains(self, addr: Address) -> bool:
        return addr in self.net and not any(addr in e for e in self.excepts)


@dataclass(frozen=True, slots=True)
class EgressNetwork:
    namespace: str
    name: str
    allow: bool
    rules: tuple[EgressRule, ...]
    created: str = ""

    def match_prefix(self, addr: Address) -> int | None:
        """The prefix length of the most specific network holding ``addr``; ``None``: none."""
        lengths = [r.net.prefixlen for r in self.rules if r.contains(addr)]
        return max(lengths) if lengths else None


def _network(value: Any, where: str) -> Network:
    if not isinstance(value, str):
        raise InvalidEgressNetworkError(f"{where}: a CIDR must be a string, not {value!r}")
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as exc:
        raise InvalidEgressNetworkError(f"{where}: invalid CIDR {value!r}: {exc}") from None


def parse_egress_network(
    obj: Mapping[str, Any], cluster_networks: Sequence[Network]
) -> EgressNetwork:
    """The enforceable form of an EgressNetwork object; bad input raises with the reason.

    Without ``networks`` (or with an empty list) it covers every address outside
    ``cluster_networks``, as Linkerd documents.
    """
    m = meta(obj)
    where = f"EgressNetwork {m.get('namespace')}/{m.get('name')}"
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise InvalidEgressNetworkError(f"{where}: no spec")
    policy = spec.get("trafficPolicy")
    if policy not in ("Allow", "Deny"):
        raise InvalidEgressNetworkError(f"{where}: trafficPolicy {policy!r} is not Allow or Deny")
    entries = spec.get("networks") or []
    if not isinstance(entries, list):
        raise InvalidEgressNetworkError(f"{where}: networks must be a list")
    rules: list[EgressRule] = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise InvalidEgressNetworkError(f"{where}: a networks entry must be an object")
        net = _network(entry.get("cidr"), where)
        excepts = entry.get("except") or []
        if not isinstance(excepts, list):
            raise InvalidEgressNetworkError(f"{where}: except must be a list")
        rules.append(EgressRule(net, tuple(_network(e, where) for e in excepts)))
    if not rules:
        rules = [
            EgressRule(everywhere, tuple(n for n in cluster_networks if n.version == v))
            for everywhere, v in zip(_EVERYWHERE, (4, 6), strict=True)
        ]
    return EgressNetwork(
        namespace=str(m.get("namespace") or ""),
        name=str(m.get("name") or ""),
        allow=policy == "Allow",
        rules=tuple(rules),
        created=str(m.get("creationTimestamp") or ""),
    )


def select_egress_network(
    networks: Iterable[EgressNetwork],
    addr: Address,
    client_namespace: str | None,
    global_namespace: str,
) -> EgressNetwork | None:
    """The EgressNetwork that governs traffic from ``client_namespace`` to ``addr``.

    A matching network of the client's own namespace wins over any of the global namespace;
    within one namespace the most specific network wins, then the oldest resource, then the
    first name.
    """
    best: dict[bool, tuple[tuple[int, str, str], EgressNetwork]] = {}
    for egress in networks:
        own = client_namespace is not None and egress.namespace == client_namespace
        if not own and egress.namespace != global_namespace:
            continue
        prefix = egress.match_prefix(addr)
        if prefix is None:
            continue
        # Longest prefix first; then oldest, then first name (smaller sorts first).
        key = (-prefix, egress.created, egress.name)
        if own not in best or key < best[own][0]:
            best[own] = (key, egress)
    for own in (True, False):
        if own in best:
            return best[own][1]
    return None


# -- the outbound policy -------------------------------------------------------------------------


def _duration(seconds: float) -> Any:
    from google.protobuf.duration_pb2 import Duration

    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def egress_resource(egress: EgressNetwork, port: int) -> meta_pb2.Metadata:
    return meta_pb2.Metadata(
        resource=meta_pb2.Resource(
            group=httproutes.POLICY_GROUP,
            kind=KIND,
            name=egress.name,
            namespace=egress.namespace,
            port=port,
        )
    )


def forward_backend(egress: EgressNetwork, ip: str, port: int) -> outbound_pb2.Backend:
    """The original destination itself, as the EgressNetwork's backend."""
    backend = outbound_pb2.Backend(
        metadata=egress_resource(egress, port),
        queue=outbound_pb2.Queue(
            capacity=QUEUE_CAPACITY, failfast_timeout=_duration(FAILFAST_SECONDS)
        ),
    )
    backend.forward.CopyFrom(destination_pb2.WeightedAddr(addr=tcp_address((ip, port)), weight=1))
    return backend


def _verdict(egress: EgressNetwork) -> str:
    return "allow" if egress.allow else "deny"


def default_http_route(
    egress: EgressNetwork, backend: outbound_pb2.Backend
) -> outbound_pb2.HttpRoute:
    route = outbound_pb2.HttpRoute()
    route.metadata.default = f"http-egress-{_verdict(egress)}"
    rule = route.rules.add()
    rule.matches.append(http_route_pb2.HttpRouteMatch(path=http_route_pb2.PathMatch(prefix="/")))
    if not egress.allow:
        rule.filters.add().failure_injector.CopyFrom(
            http_route_pb2.HttpFailureInjector(status=403, message=DENIED_MESSAGE)
        )
    rule.backends.first_available.backends.add().backend.CopyFrom(backend)
    return route


def default_grpc_route(
    egress: EgressNetwork, backend: outbound_pb2.Backend
) -> outbound_pb2.GrpcRoute:
    route = outbound_pb2.GrpcRoute()
    route.metadata.default = f"grpc-egress-{_verdict(egress)}"
    rule = route.rules.add()
    rule.matches.append(grpc_route_pb2.GrpcRouteMatch())  # every call
    if not egress.allow:
        rule.filters.add().failure_injector.CopyFrom(
            grpc_route_pb2.GrpcFailureInjector(code=GRPC_PERMISSION_DENIED, message=DENIED_MESSAGE)
        )
    rule.backends.first_available.backends.add().backend.CopyFrom(backend)
    return route


def _resolver(
    egress: EgressNetwork,
    forward: outbound_pb2.Backend,
    service_exists: Callable[[str, str], bool],
    settings: DestinationSettings,
) -> tcp_routes.Resolve:
    """backendRefs of a TLSRoute/TCPRoute under ``egress``: the EgressNetwork itself
    (``forward``: the original destination) or a Service of the cluster."""

    def resolve(ref: Mapping[str, Any], route_ns: str) -> tcp_routes.ResolvedRef:
        if _to_parent(ref, egress, route_ns):
            return forward
        if ref.get("kind") not in (None, "Service"):
            raise httproutes.InvalidRouteError(
                f"backendRef kind {ref.get('kind')!r} is neither a Service nor the EgressNetwork"
            )
        return tcp_routes.service_ref(
            ref,
            route_ns,
            service_exists,
            lambda n, ns, p: balancer_backend(n, ns, p, settings),
            service_resource,
        )

    return resolve


def tcp_route(
    route: Mapping[str, Any],
    egress: EgressNetwork,
    forward: outbound_pb2.Backend,
    service_exists: Callable[[str, str], bool],
    settings: DestinationSettings,
) -> outbound_pb2.OpaqueRoute:
    """A TCPRoute with ``egress`` as parent, as an opaque route: the backendRefs of all its
    rules, weighted (:mod:`.tcp_routes`)."""
    return tcp_routes.opaque_route(route, _resolver(egress, forward, service_exists, settings))


def tls_route(
    route: Mapping[str, Any],
    egress: EgressNetwork,
    forward: outbound_pb2.Backend,
    service_exists: Callable[[str, str], bool],
    settings: DestinationSettings,
) -> outbound_pb2.TlsRoute:
    """A TLSRoute with ``egress`` as parent: its hostnames, its weighted backendRefs."""
    return tcp_routes.tls_route(route, _resolver(egress, forward, service_exists, settings))


def default_tls_route(
    egress: EgressNetwork, backend: outbound_pb2.Backend
) -> outbound_pb2.TlsRoute:
    """The trafficPolicy for TLS no TLSRoute's hostnames match (no SNI match: any name)."""
    route = outbound_pb2.TlsRoute()
    route.metadata.default = f"tls-egress-{_verdict(egress)}"
    rule = route.rules.add()
    if not egress.allow:
        rule.filters.add().forbidden.CopyFrom(opaque_route_pb2.Forbidden())
    rule.backends.first_available.backends.add().backend.CopyFrom(backend)
    return route


def default_opaque_route(
    egress: EgressNetwork, backend: outbound_pb2.Backend
) -> outbound_pb2.OpaqueRoute:
    route = outbound_pb2.OpaqueRoute()
    route.metadata.default = f"tcp-egress-{_verdict(egress)}"
    rule = route.rules.add()
    if not egress.allow:
        rule.filters.add().forbidden.CopyFrom(opaque_route_pb2.Forbidden())
    rule.backends.first_available.backends.add().backend.CopyFrom(backend)
    return route


def _attaches(route: Mapping[str, Any], egress: EgressNetwork, port: int) -> bool:
    route_ns = meta(route).get("namespace")
    return any(
        p.get("kind") == KIND
        and (p.get("group") or httproutes.POLICY_GROUP) == httproutes.POLICY_GROUP
        and p.get("name") == egress.name
        and (p.get("namespace") or route_ns) == egress.namespace
        and p.get("port") in (None, port)
        for p in httproutes.parent_refs(route)
    )


def _to_parent(ref: Mapping[str, Any], egress: EgressNetwork, route_ns: str) -> bool:
    return (
        ref.get("kind") == KIND
        and (ref.get("group") or httproutes.POLICY_GROUP) == httproutes.POLICY_GROUP
        and ref.get("name") == egress.name
        and (ref.get("namespace") or route_ns) == egress.namespace
    )


def _forwarding_rules(route: Mapping[str, Any], egress: EgressNetwork) -> dict[str, Any]:
    """``route`` with backendRefs to the parent EgressNetwork dropped: a rule without
    backendRefs (or with only those) goes to the original destination."""
    route_ns = str(meta(route).get("namespace") or "")
    spec = dict(route.get("spec") or {})
    rules = []
    for rule in spec.get("rules") or [{}]:
        refs = list(rule.get("backendRefs") or ())
        to_parent = [r for r in refs if _to_parent(r, egress, route_ns)]
        if to_parent and len(to_parent) != len(refs):
            raise httproutes.InvalidRouteError(
                "a rule cannot mix its EgressNetwork parent with other backendRefs"
            )
        rules.append({k: v for k, v in rule.items() if k != "backendRefs" or not to_parent})
    spec["rules"] = rules
    return {**route, "spec": spec}


def egress_routes(
    egress: EgressNetwork,
    port: int,
    routes: Callable[[str], list[Any]],
    client_namespace: str | None,
) -> list[Mapping[str, Any]]:
    """The routes (of one kind) with ``egress`` as parent: the client namespace's own
    (consumer) routes when it has any, else those of the EgressNetwork's namespace."""
    namespaces = [egress.namespace]
    if client_namespace and client_namespace != egress.namespace:
        namespaces.insert(0, client_namespace)
    for ns in namespaces:
        attached = [r for r in routes(ns) if _attaches(r, egress, port)]
        if attached:
            return sorted(attached, key=httproutes.route_sort_key)
    return []


def egress_policy(
    egress: EgressNetwork,
    ip: str,
    port: int,
    routes: Sequence[Mapping[str, Any]],
    service_exists: Callable[[str, str], bool],
    settings: DestinationSettings,
    issues: Issues,
    grpc_routes: Sequence[Mapping[str, Any]] = (),
    tcp_routes: Sequence[Mapping[str, Any]] = (),
    tls_routes: Sequence[Mapping[str, Any]] = (),
) -> outbound_pb2.OutboundPolicy:
    """The ``OutboundPolicy`` for ``ip:port`` under ``egress`` with its attached ``routes``
    (HTTPRoutes), ``grpc_routes``, ``tcp_routes`` and ``tls_routes``, each oldest first."""
    backend = forward_backend(egress, ip, port)
    policy = outbound_pb2.OutboundPolicy(metadata=egress_resource(egress, port))
    grpc: list[outbound_pb2.GrpcRoute] = []
    for route in grpc_routes:
        try:
            grpc.append(
                outbound_grpc_route(
                    _forwarding_rules(route, egress), backend, service_exists, settings
                )
            )
        except (httproutes.InvalidRouteError, ValueError, TypeError) as exc:
            issues.add(f"GRPCRoute {meta(route).get('namespace')}/{meta(route).get('name')} "
                       f"skipped: {exc}")  # fmt: skip
    if grpc:
        if routes:
            issues.add(
                f"EgressNetwork {egress.namespace}/{egress.name} port {port}: has both "
                "HTTPRoutes and GRPCRoutes; the GRPCRoutes apply"
            )
        policy.protocol.grpc.routes.extend([*grpc, default_grpc_route(egress, backend)])
        return policy
    tls: list[outbound_pb2.TlsRoute] = []
    for route in tls_routes:
        try:
            tls.append(tls_route(route, egress, backend, service_exists, settings))
        except (httproutes.InvalidRouteError, ValueError, TypeError) as exc:
            issues.add(f"TLSRoute {meta(route).get('namespace')}/{meta(route).get('name')} "
                       f"skipped: {exc}")  # fmt: skip
    if tls and not routes:
        policy.protocol.tls.routes.extend([*tls, default_tls_route(egress, backend)])
        return policy
    if tls:
        issues.add(
            f"EgressNetwork {egress.namespace}/{egress.name} port {port}: has both HTTPRoutes "
            "and TLSRoutes; the HTTPRoutes apply"
        )
    opaque = default_opaque_route(egress, backend)
    for route in tcp_routes:
        try:
            opaque = tcp_route(route, egress, backend, service_exists, settings)
            break  # the oldest valid TCPRoute carries the port
        except (httproutes.InvalidRouteError, ValueError, TypeError) as exc:
            issues.add(f"TCPRoute {meta(route).get('namespace')}/{meta(route).get('name')} "
                       f"skipped: {exc}")  # fmt: skip
    http: list[outbound_pb2.HttpRoute] = []
    for route in routes:
        try:
            http.append(
                outbound_route(_forwarding_rules(route, egress), backend, service_exists, settings)
            )
        except (httproutes.InvalidRouteError, ValueError, TypeError) as exc:
            issues.add(f"HTTPRoute {meta(route).get('namespace')}/{meta(route).get('name')} "
                       f"skipped: {exc}")  # fmt: skip
    # The trafficPolicy answers whatever no route matches.
    http.append(default_http_route(egress, backend))
    detect = policy.protocol.detect
    detect.timeout.CopyFrom(_duration(DETECT_TIMEOUT_SECONDS))
    detect.opaque.routes.append(opaque)
    detect.http1.routes.extend(http)
    detect.http2.routes.extend(http)
    return policy
