"""Inbound authorization: may this client use this port (TCP) or this route (HTTP)?

The inbound policy API sends one ``Server`` per watched port (linkerd-wire.md §1.7, §3.4,
§9 inbound step 5, §10 item 12). :func:`compile_server` turns it into a
:class:`ServerPolicy`; :func:`default_policy` builds the policy the proxy uses until the
first ``Server`` arrives (``LINKERD2_PROXY_INBOUND_DEFAULT_POLICY``: ``all-unauthenticated``,
``all-authenticated``, ``cluster-unauthenticated``, ``cluster-authenticated``, ``deny``,
``audit``).

Semantics:

* an ``Authz`` permits a client when its IP is in one of the ``networks`` (and in none of
  their ``except`` nets) **and** its authentication fits: ``unauthenticated`` admits anyone,
  ``meshTLS.unauthenticated`` any TLS client, ``meshTLS.identities`` a client whose mTLS
  identity is listed or ends with a listed suffix (an empty suffix admits every identity);
* an ``Authz`` without networks is ignored; a server without authorizations denies all;
* TCP (opaque) connections are checked against the server's authorizations; HTTP requests
  are first routed (:mod:`.routes`) and checked against the *route's* authorizations — no
  matching route is a 404, not a 403. A server with no routes gets Linkerd's catch-all
  ``default`` route carrying the server's authorizations;
* ``audit`` allows what would have been denied, marking the decision so it can be logged;
* an HTTP protocol's ``HttpLocalRateLimit`` becomes the policy's
  :class:`~.ratelimit.LocalRateLimiter`, checked after authorization.

A decision carries the ``srv_*``, ``route_*`` and ``authz_*`` labels for the
``inbound_{http,tcp}_authz_{allow,deny}_total`` metrics.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gossamer_api.addresses import AddressError, IPAddress, IPNetwork, ip_network_from_proto
from gossamer_common.linear_regex import compile_linear

from gossamer_proxy.mesh.ratelimit import LocalRateLimiter, RateLimitSpec
from gossamer_proxy.mesh.request import RequestView
from gossamer_proxy.mesh.routes import (
    HttpRoute,
    PathMatch,
    RouteError,
    RouteMatch,
    RouteRule,
    compile_header_match,
    compile_host_match,
    compile_route_match,
    find_route,
)

if TYPE_CHECKING:  # protobuf loads with the control-plane client, not with this module
    from gossamer_api.proxy import grpc_route_pb2, inbound_pb2, meta_pb2

__all__ = [
    "DEFAULT_CLUSTER_NETWORKS",
    "DEFAULT_POLICIES",
    "Authentication",
    "Authorization",
    "ClientInfo",
    "Decision",
    "InboundRoute",
    "MetaLabels",
    "PolicyError",
    "ServerPolicy",
    "Verdict",
    "authorize_http",
    "authorize_tcp",
    "compile_rate_limit",
    "compile_server",
    "default_policy",
    "grpc_route_match",
]

DEFAULT_POLICIES = (
    "all-unauthenticated",
    "all-authenticated",
    "cluster-unauthenticated",
    "cluster-authenticated",
    "deny",
    "audit",
)
DEFAULT_CLUSTER_NETWORKS = ("10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16")
ALL_NETWORKS = ("0.0.0.0/0", "::/0")
DEFAULT_DETECT_TIMEOUT = 10.0


class PolicyError(ValueError):
    """A ``Server`` (or a default-policy name) cannot be used."""


@dataclass(frozen=True, slots=True)
class MetaLabels:
    """``group``/``kind``/``name`` of a policy object, as metric labels use them."""

    group: str = ""
    kind: str = "default"
    name: str = ""
    #: Only the outbound route metrics (``parent_*``/``backend_*``) use these three.
    namespace: str = ""
    section: str = ""
    port: int = 0

    @classmethod
    def from_proto(
        cls, metadata: meta_pb2.Metadata | None, labels: Mapping[str, str] | None = None
    ) -> MetaLabels:
        if metadata is not None:
            kind = metadata.WhichOneof("kind")
            if kind == "default":
                return cls("", "default", metadata.default)
            if kind == "resource":
                r = metadata.resource
                return cls(r.group, r.kind, r.name, r.namespace, r.section, r.port)
        labels = labels or {}
        return cls(labels.get("group", ""), labels.get("kind", "default"), labels.get("name", ""))


class Authentication(enum.Enum):
    UNAUTHENTICATED = "unauthenticated"
    TLS_UNAUTHENTICATED = "tls-unauthenticated"
    IDENTITIES = "identities"


@dataclass(frozen=True, slots=True)
class Network:
    net: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()

    def contains(self, ip: IPAddress) -> bool:
        if ip.version != self.net.version or ip not in self.net:
            return False
        return not any(ip.version == e.version and ip in e for e in self.excepts)


@dataclass(frozen=True, slots=True)
class Authorization:
    networks: tuple[Network, ...]
    authentication: Authentication
    meta: MetaLabels
    identities: frozenset[str] = frozenset()
    suffixes: tuple[tuple[str, ...], ...] = ()

    def permits(self, client: ClientInfo) -> bool:
        ip = client.ip
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not any(n.contains(ip) for n in self.networks):
            return False
        if self.authentication is Authentication.UNAUTHENTICATED:
            return True
        if self.authentication is Authentication.TLS_UNAUTHENTICATED:
            return client.tls
        identity = client.identity
        if identity is None:
            return False
        if identity in self.identities:
            return True
        labels = tuple(identity.lower().split("."))
        return any(
            not suffix or (len(labels) > len(suffix) and labels[-len(suffix) :] == suffix)
            for suffix in self.suffixes
        )


@dataclass(frozen=True, slots=True)
class InboundRoute:
    meta: MetaLabels
    authorizations: tuple[Authorization, ...]


@dataclass(frozen=True, slots=True)
class ServerPolicy:
    protocol: str
    """``detect``, ``opaque``, ``tls``, ``http1``, ``http2`` or ``grpc``."""
    authorizations: tuple[Authorization, ...]
    meta: MetaLabels
    http_routes: tuple[HttpRoute[InboundRoute], ...]
    detect_timeout: float = DEFAULT_DETECT_TIMEOUT
    audit: bool = False
    #: The Server's ``HTTPLocalRateLimitPolicy`` with its buckets (compared by its spec).
    rate_limit: LocalRateLimiter | None = None

    @property
    def is_http(self) -> bool:
        return self.protocol in ("detect", "http1", "http2", "grpc")


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip: IPAddress
    tls: bool = False
    identity: str | None = None
    """The client's mTLS identity (first SAN of its certificate), if it presented one."""


class Verdict(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    ROUTE_NOT_FOUND = "route_not_found"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    server: MetaLabels
    route: MetaLabels | None = None
    authz: MetaLabels | None = None
    audited: bool = False
    """Allowed only because the server is in audit mode."""

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW

    def labels(self) -> dict[str, str]:
        labels = {
            "srv_group": self.server.group,
            "srv_kind": self.server.kind,
            "srv_name": self.server.name,
        }
        if self.route is not None:
            labels |= {
                "route_group": self.route.group,
                "route_kind": self.route.kind,
                "route_name": self.route.name,
            }
        if self.authz is not None:
            labels |= {
                "authz_group": self.authz.group,
                "authz_kind": self.authz.kind,
                "authz_name": self.authz.name,
            }
        return labels


def _decide(
    policy: ServerPolicy,
    authorizations: Sequence[Authorization],
    client: ClientInfo,
    route: MetaLabels | None,
) -> Decision:
    for authz in authorizations:
        if authz.permits(client):
            return Decision(Verdict.ALLOW, policy.meta, route, authz.meta)
    if policy.audit:
        return Decision(Verdict.ALLOW, policy.meta, route, MetaLabels("", "default", "audit"), True)
    return Decision(Verdict.DENY, policy.meta, route)


def authorize_tcp(policy: ServerPolicy, client: ClientInfo) -> Decision:
    """Decide a TCP connection (opaque ports, or TLS passthrough) against the server."""
    return _decide(policy, policy.authorizations, client, None)


def authorize_http(policy: ServerPolicy, client: ClientInfo, request: RequestView) -> Decision:
    """Route ``request`` and decide it against that route's authorizations."""
    found = find_route(policy.http_routes, request)
    if found is None:
        return Decision(Verdict.ROUTE_NOT_FOUND, policy.meta)
    route = found[1].action
    return _decide(policy, route.authorizations, client, route.meta)


# --- compiling Server messages -------------------------------------------------------------


def _networks(messages: Iterable[inbound_pb2.Network]) -> tuple[Network, ...]:
    networks = []
    for message in messages:
        try:
            networks.append(
                Network(
                    ip_network_from_proto(message.net),
                    tuple(ip_network_from_proto(e) for e in getattr(message, "except")),
                )
            )
        except AddressError as exc:
            raise PolicyError(f"invalid authorization network: {exc}") from None
    return tuple(networks)


def _authorization(message: inbound_pb2.Authz) -> Authorization | None:
    networks = _networks(message.networks)
    if not networks:
        return None  # Linkerd ignores an Authz without networks.
    meta = MetaLabels.from_proto(
        message.metadata if message.HasField("metadata") else None, message.labels
    )
    permit = message.authentication.WhichOneof("permit")
    if permit == "unauthenticated":
        return Authorization(networks, Authentication.UNAUTHENTICATED, meta)
    if permit == "meshTLS":
        mesh = message.authentication.meshTLS
        clients = mesh.WhichOneof("clients")
        if clients == "unauthenticated":
            return Authorization(networks, Authentication.TLS_UNAUTHENTICATED, meta)
        if clients == "identities":
            ids = mesh.identities
            return Authorization(
                networks,
                Authentication.IDENTITIES,
                meta,
                identities=frozenset(i.name for i in ids.identities if i.name),
                suffixes=tuple(tuple(p.lower() for p in s.parts) for s in ids.suffixes),
            )
    raise PolicyError(f"authorization {meta.name!r} has no authentication set")


def _authorizations(messages: Iterable[inbound_pb2.Authz]) -> tuple[Authorization, ...]:
    return tuple(a for a in (_authorization(m) for m in messages) if a is not None)


def grpc_route_match(message: grpc_route_pb2.GrpcRouteMatch) -> RouteMatch:
    """A gRPC route match as an HTTP match on ``POST /<service>/<method>``."""
    service, method = message.rpc.service, message.rpc.method
    path: PathMatch | None = None
    if service and method:
        path = PathMatch("exact", f"/{service}/{method}")
    elif service:
        path = PathMatch("prefix", f"/{service}")
    elif method:
        path = PathMatch("regex", f"/[^/]+/{method}", compile_linear(f"/[^/]+/{re.escape(method)}"))
    headers = tuple(compile_header_match(h) for h in message.headers)
    return RouteMatch(path=path, headers=headers, method="POST")


def _http_route(
    message: inbound_pb2.HttpRoute | inbound_pb2.GrpcRoute, grpc: bool
) -> HttpRoute[InboundRoute]:
    action = InboundRoute(
        meta=MetaLabels.from_proto(message.metadata if message.HasField("metadata") else None),
        authorizations=_authorizations(message.authorizations),
    )
    rules: list[RouteRule[InboundRoute]] = []
    for rule in message.rules:
        if grpc:
            matches = tuple(grpc_route_match(m) for m in rule.matches)  # type: ignore[arg-type]
        else:
            matches = tuple(compile_route_match(m) for m in rule.matches)  # type: ignore[arg-type]
        rules.append(RouteRule(matches, action))
    if not rules:
        rules.append(RouteRule((), action))
    return HttpRoute(tuple(compile_host_match(h) for h in message.hosts), tuple(rules))


def _limit(message: inbound_pb2.HttpLocalRateLimit.Limit) -> int | None:
    return message.requestsPerSecond or None  # zero means "no limit", as in Linkerd


def compile_rate_limit(message: inbound_pb2.HttpLocalRateLimit) -> RateLimitSpec | None:
    """The spec of an ``HttpLocalRateLimit``; ``None`` when it limits nothing."""
    meta = MetaLabels.from_proto(message.metadata if message.HasField("metadata") else None)
    total = _limit(message.total) if message.HasField("total") else None
    identity = _limit(message.identity) if message.HasField("identity") else None
    overrides: list[tuple[int, frozenset[str]]] = []
    for override in message.overrides:
        rps = _limit(override.limit) if override.HasField("limit") else None
        names = frozenset(i.name for i in override.clients.identities if i.name)
        if rps is not None and names:
            overrides.append((rps, names))
    if total is None and identity is None and not overrides:
        return None
    return RateLimitSpec(meta, total, identity, tuple(overrides))


def _default_route(authorizations: tuple[Authorization, ...]) -> HttpRoute[InboundRoute]:
    action = InboundRoute(MetaLabels("", "default", "default"), authorizations)
    return HttpRoute((), (RouteRule((), action),))


def compile_server(message: inbound_pb2.Server) -> ServerPolicy:
    """Turn a ``Server`` into a :class:`ServerPolicy` (raises :class:`PolicyError`)."""
    authorizations = _authorizations(message.authorizations)
    meta = MetaLabels.from_proto(None, message.labels)
    protocol = message.protocol.WhichOneof("kind")
    if protocol is None:
        raise PolicyError("Server has no protocol set")
    timeout = DEFAULT_DETECT_TIMEOUT
    routes: list[HttpRoute[InboundRoute]] = []
    limit: RateLimitSpec | None = None
    try:
        if protocol == "detect":
            detect = message.protocol.detect
            if detect.HasField("timeout"):
                timeout = detect.timeout.seconds + detect.timeout.nanos / 1e9 or timeout
            routes = [_http_route(r, False) for r in detect.http_routes]
            if detect.HasField("http_local_rate_limit"):
                limit = compile_rate_limit(detect.http_local_rate_limit)
        elif protocol in ("http1", "http2"):
            proto = getattr(message.protocol, protocol)
            routes = [_http_route(r, False) for r in proto.routes]
            if proto.HasField("local_rate_limit"):
                limit = compile_rate_limit(proto.local_rate_limit)
        elif protocol == "grpc":
            routes = [_http_route(r, True) for r in message.protocol.grpc.routes]
    except RouteError as exc:
        raise PolicyError(f"Server {meta.name!r} has an invalid route: {exc}") from None
    if not routes:
        routes = [_default_route(authorizations)]
    return ServerPolicy(
        protocol=protocol,
        authorizations=authorizations,
        meta=meta,
        http_routes=tuple(routes),
        detect_timeout=timeout,
        audit=meta.kind == "default" and meta.name == "audit",
        rate_limit=LocalRateLimiter(limit) if limit is not None else None,
    )


def default_policy(
    name: str,
    *,
    cluster_networks: Sequence[str] = DEFAULT_CLUSTER_NETWORKS,
    opaque: bool = False,
    require_identity: bool = False,
    detect_timeout: float = DEFAULT_DETECT_TIMEOUT,
) -> ServerPolicy:
    """The policy for ``LINKERD2_PROXY_INBOUND_DEFAULT_POLICY=name`` (before any ``Server``).

    ``opaque`` is for ports in ``…_PORTS_DISABLE_PROTOCOL_DETECTION``; ``require_identity``
    for ports in ``…_PORTS_REQUIRE_IDENTITY`` (allow policies become authenticated).
    """
    if name not in DEFAULT_POLICIES:
        raise PolicyError(
            f"unknown default inbound policy {name!r}; "
            f"expected one of {', '.join(DEFAULT_POLICIES)}"
        )
    meta = MetaLabels("", "default", name)
    authorizations: tuple[Authorization, ...] = ()
    if name != "deny":
        texts = cluster_networks if name.startswith("cluster-") else ALL_NETWORKS
        try:
            nets = tuple(Network(ipaddress.ip_network(t, strict=False)) for t in texts)
        except ValueError as exc:
            raise PolicyError(f"invalid cluster network: {exc}") from None
        authenticated = name.endswith("-authenticated") or require_identity
        authn = Authentication.IDENTITIES if authenticated else Authentication.UNAUTHENTICATED
        authorizations = (
            Authorization(nets, authn, meta, suffixes=((),) if authenticated else ()),
        )
    return ServerPolicy(
        protocol="opaque" if opaque else "detect",
        authorizations=authorizations,
        meta=meta,
        http_routes=(_default_route(authorizations),),
        detect_timeout=detect_timeout,
        audit=name == "audit",
    )
