"""Opaque (TCPRoute) and TLS (TLSRoute) routes of an outbound policy, and choosing one (sans-io).

A connection that is not HTTP is routed by the policy's ``OpaqueRoute``\\s, or, when the policy's
protocol is ``tls``, by its ``TlsRoute``\\s and the SNI of the client's ClientHello, which the
proxy passes through without terminating it (linkerd-wire.md §1.8):

* a TLS route matches when one of its ``snis`` matches the server name: ``exact``, or
  ``suffix`` (a Gateway API wildcard ``*.example.com``, sent as reverse labels
  ``["com", "example"]``), which matches names with at least one more label in front
  (``a.example.com``, ``a.b.example.com``, never ``example.com`` itself); a route without
  ``snis`` matches every connection. The most specific match wins: an exact name, then the
  longest suffix, then a route without names; ties go to the route sent first (oldest);
* an opaque route has no matches: the first route carries the connection;
* a route's rules have no matches either, so their backends are pooled into one weighted
  choice, each backend keeping its own rule's filters (as Linkerd flattens a TCPRoute's
  rules into one distribution);
* an ``Invalid`` or ``Forbidden`` filter (on the rule or the backend) refuses the connection
  that lands on it; a route whose distribution is empty and has no filter has nothing to
  serve it.

:func:`route_connection` answers a :class:`TcpDecision`: the route and backend, or the reason
the connection is refused (``no_route``, ``forbidden``, ``invalid``, ``no_backend``).
Randomness comes in as an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gossamer_proxy.mesh.authz import MetaLabels
from gossamer_proxy.mesh.backoff import UniformSource
from gossamer_proxy.mesh.split import WeightedSplit
from gossamer_proxy.mesh.tls_detect import MAX_SERVER_NAME_LENGTH, is_valid_server_name

if TYPE_CHECKING:
    from gossamer_proxy.mesh.outbound_policy import BackendSpec

__all__ = [
    "MAX_SNI_LENGTH",
    "SniMatch",
    "TcpBackend",
    "TcpDecision",
    "TcpRoute",
    "TcpRouteError",
    "compile_tcp_routes",
    "find_tls_route",
    "is_valid_server_name",
    "route_connection",
    "sni_match_from_proto",
]

#: A DNS name is at most 253 characters; longer SNIs and match names are refused.
MAX_SNI_LENGTH = MAX_SERVER_NAME_LENGTH


class TcpRouteError(ValueError):
    """An opaque or TLS route cannot be used."""


@dataclass(frozen=True, slots=True)
class SniMatch:
    """One route hostname: ``exact`` name, or ``suffix`` labels (``("example", "com")``)."""

    exact: str | None = None
    suffix: tuple[str, ...] = ()

    def rank(self, server_name: str | None) -> tuple[int, int] | None:
        """How specifically this matches ``server_name`` (higher wins), or ``None``."""
        if server_name is None:
            return None
        if self.exact is not None:
            return (2, len(self.exact)) if server_name == self.exact else None
        labels = server_name.split(".")
        if len(labels) <= len(self.suffix) or tuple(labels[-len(self.suffix) :]) != self.suffix:
            return None
        return (1, len(self.suffix))


@dataclass(frozen=True, slots=True)
class TcpBackend:
    """One backend of a route: ``spec`` (a ``BackendSpec``) unless it refuses (``refusal``)."""

    spec: BackendSpec | None
    #: ``"forbidden"`` or ``"invalid"`` when a filter refuses connections sent here.
    refusal: str | None = None
    #: The ``Invalid`` filter's message, for the log.
    message: str = ""


@dataclass(frozen=True, slots=True)
class TcpRoute:
    meta: MetaLabels
    backends: WeightedSplit[TcpBackend]
    #: TLS routes only: the server names it serves (empty: every name).
    snis: tuple[SniMatch, ...] = ()

    def rank(self, server_name: str | None) -> tuple[int, int] | None:
        if not self.snis:
            return (0, 0)
        ranks = [r for r in (m.rank(server_name) for m in self.snis) if r is not None]
        return max(ranks) if ranks else None


@dataclass(frozen=True, slots=True)
class TcpDecision:
    """Where one connection goes: ``backend`` (a ``BackendSpec``), or ``error`` why not."""

    route: TcpRoute | None
    backend: BackendSpec | None = None
    error: str | None = None
    message: str = ""


def _normalise_name(name: str, where: str) -> str:
    name = name.strip().lower().rstrip(".")
    if not name or len(name) > MAX_SNI_LENGTH or not name.isascii():
        raise TcpRouteError(f"{where}: invalid host name {name[:64]!r}")
    return name


def sni_match_from_proto(message: Any) -> SniMatch:
    """A ``tls_route.SniMatch`` as a :class:`SniMatch`; malformed names raise."""
    kind = message.WhichOneof("match")
    if kind == "exact":
        return SniMatch(exact=_normalise_name(message.exact, "exact SNI match"))
    if kind == "suffix":
        labels = [label.strip().lower() for label in message.suffix.reverse_labels]
        if not labels or any(not label or "." in label for label in labels):
            raise TcpRouteError(f"suffix SNI match has invalid labels {labels[:8]!r}")
        suffix = tuple(reversed(labels))
        _normalise_name(".".join(suffix), "suffix SNI match")
        return SniMatch(suffix=suffix)
    raise TcpRouteError("SNI match is neither exact nor suffix")


def _refusal(filters: Sequence[Any]) -> tuple[str | None, str]:
    for message in filters:
        kind = message.WhichOneof("kind")
        if kind == "invalid":
            return "invalid", str(message.invalid.message)
        if kind == "forbidden":
            return "forbidden", ""
    return None, ""


def _rule_backends(
    rule: Any, backend: Callable[[Any], BackendSpec]
) -> list[tuple[TcpBackend, int]]:
    """A rule's backends with their weights; its own filters apply to each of them."""
    rule_refusal, rule_message = _refusal(rule.filters)
    distribution = rule.backends
    kind = distribution.WhichOneof("kind")
    route_backends: list[tuple[Any, int]]
    if kind == "random_available":
        route_backends = [(b.backend, b.weight) for b in distribution.random_available.backends]
    elif kind == "first_available":
        route_backends = [(b, 1) for b in distribution.first_available.backends[:1]]
    else:
        route_backends = []
    out: list[tuple[TcpBackend, int]] = []
    for route_backend, weight in route_backends:
        refusal, message = rule_refusal, rule_message
        if refusal is None:
            refusal, message = _refusal(route_backend.filters)
        if refusal is not None:
            # Refused anyway: the backend itself need not be usable (Linkerd sends an
            # unresolvable backendRef as a backend without kind and an ``Invalid`` filter).
            out.append((TcpBackend(None, refusal, message), weight))
        else:
            out.append((TcpBackend(backend(route_backend.backend)), weight))
    if not route_backends and rule_refusal is not None:
        # ``Distribution.empty`` with a filter (an undefined port, a denied egress).
        out.append((TcpBackend(None, rule_refusal, rule_message), 1))
    return out


def compile_tcp_routes(
    messages: Sequence[Any], backend: Callable[[Any], BackendSpec], *, tls: bool
) -> tuple[TcpRoute, ...]:
    """``OpaqueRoute``\\s (``tls`` False) or ``TlsRoute``\\s as :class:`TcpRoute`\\s.

    ``backend`` compiles one ``Backend`` message (it raises on a malformed one).
    """
    routes = []
    for message in messages:
        meta = MetaLabels.from_proto(message.metadata if message.HasField("metadata") else None)
        try:
            snis = tuple(sni_match_from_proto(m) for m in message.snis) if tls else ()
            weighted = [pair for rule in message.rules for pair in _rule_backends(rule, backend)]
            split = WeightedSplit(weighted)
        except (TcpRouteError, ValueError) as exc:
            raise TcpRouteError(f"route {meta.name!r}: {exc}") from None
        routes.append(TcpRoute(meta, split, snis))
    return tuple(routes)


def find_tls_route(routes: Sequence[TcpRoute], server_name: str | None) -> TcpRoute | None:
    """The most specific route for ``server_name`` (the first sent among equals)."""
    best: tuple[tuple[int, int], TcpRoute] | None = None
    for route in routes:
        rank = route.rank(server_name)
        if rank is not None and (best is None or rank > best[0]):
            best = (rank, route)
    return None if best is None else best[1]


def route_connection(
    routes: Sequence[TcpRoute],
    rng: UniformSource,
    *,
    tls: bool,
    server_name: str | None = None,
) -> TcpDecision:
    """Route one connection: by ``server_name`` among TLS routes, else the first opaque one.
    An SNI that is no valid host name (:func:`is_valid_server_name`) has no route."""
    if tls and server_name is not None and not is_valid_server_name(server_name):
        return TcpDecision(
            None,
            error="no_route",
            message=f"invalid SNI {server_name[:64]!r} ({len(server_name)} characters)",
        )
    first = routes[0] if routes else None
    route = find_tls_route(routes, server_name) if tls else first
    if route is None:
        return TcpDecision(None, error="no_route")
    chosen = route.backends.choose(rng)
    if chosen is None:
        return TcpDecision(route, error="no_backend")
    if chosen.refusal is not None:
        return TcpDecision(route, error=chosen.refusal, message=chosen.message)
    return TcpDecision(route, backend=chosen.spec)
