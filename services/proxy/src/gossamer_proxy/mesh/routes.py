"""Gateway-API-style HTTP route matching for policy routes (inbound and outbound ``HttpRoute``).

A route has hostnames and rules; a rule has matches (any one may match) and whatever the
caller attaches to it (backends, filters, timeouts, authorizations). Among all rules of all
routes that match a request the *most specific* wins (linkerd-wire.md §9 outbound step 3,
Gateway API precedence):

1. host: an exact hostname beats a wildcard suffix, a longer suffix beats a shorter one, and
   both beat a route without hostnames;
2. path: exact beats regex beats prefix, each ranked by length;
3. a method match beats none; then more header matches; then more query-parameter matches.

Ties go to the earlier route and rule (the policy controller already orders routes by
creation time, then name). Prefix matches work on whole path segments (``/foo`` matches
``/foo`` and ``/foo/bar`` but not ``/foobar``); regexes must match the whole path or value.
Invalid input (a bad regex, an unset oneof) raises :class:`RouteError` so a watcher can keep
the last good policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, AnyStr, Generic, Literal, TypeVar

from gossamer_common.linear_regex import LinearRegex, RegexError, compile_linear

from gossamer_proxy.mesh.request import RequestView

if TYPE_CHECKING:  # protobuf loads with the control-plane client, not with this module
    from gossamer_api.proxy import http_route_pb2, http_types_pb2

__all__ = [
    "HeaderMatch",
    "HostMatch",
    "HttpRoute",
    "PathMatch",
    "QueryParamMatch",
    "RouteError",
    "RouteMatch",
    "RouteRule",
    "compile_header_match",
    "compile_host_match",
    "compile_route_match",
    "find_route",
    "method_from_proto",
]

T = TypeVar("T")

_DEFAULT_PATH_RANK = (1, 1)
"""How ``PathPrefix /`` ranks (prefix, one character)."""


class RouteError(ValueError):
    """A route from the control plane cannot be used (the previous policy stays in force)."""


def _compile(pattern: AnyStr, what: str) -> LinearRegex[AnyStr]:
    """RE2 (linear time: a route cannot stall the loop); unsupported patterns are errors."""
    try:
        return compile_linear(pattern)
    except RegexError as exc:
        raise RouteError(f"invalid {what} regex {pattern!r}: {exc}") from None


def method_from_proto(message: http_types_pb2.HttpMethod) -> str:
    """``HttpMethod`` → upper-case method name; an unset method is an error."""
    kind = message.WhichOneof("type")
    if kind == "registered":
        from gossamer_api.proxy import http_types_pb2

        return str(http_types_pb2.HttpMethod.Registered.Name(message.registered))
    if kind == "unregistered":
        if not message.unregistered:
            raise RouteError("HttpMethod.unregistered is empty")
        return message.unregistered.upper()
    raise RouteError("HttpMethod has neither registered nor unregistered set")


@dataclass(frozen=True, slots=True)
class PathMatch:
    kind: Literal["exact", "prefix", "regex"]
    value: str
    regex: LinearRegex[str] | None = None

    def matches(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.value
        if self.kind == "prefix":
            prefix = self.value.rstrip("/")
            if not prefix:
                return path.startswith("/")
            return path == prefix or path.startswith(prefix + "/")
        assert self.regex is not None
        return self.regex.fullmatch(path) is not None

    @property
    def rank(self) -> tuple[int, int]:
        return ({"exact": 3, "regex": 2, "prefix": 1}[self.kind], len(self.value))


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    name: bytes
    exact: bytes | None = None
    regex: LinearRegex[bytes] | None = None

    def matches(self, request: RequestView) -> bool:
        for value in request.header_values(self.name):
            if self.exact is not None and value == self.exact:
                return True
            if self.regex is not None and self.regex.fullmatch(value) is not None:
                return True
        return False


@dataclass(frozen=True, slots=True)
class QueryParamMatch:
    name: str
    exact: str | None = None
    regex: LinearRegex[str] | None = None

    def matches(self, request: RequestView) -> bool:
        for value in request.query_values(self.name):
            if self.exact is not None and value == self.exact:
                return True
            if self.regex is not None and self.regex.fullmatch(value) is not None:
                return True
        return False


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """All of these must hold; an empty match matches every request."""

    path: PathMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[QueryParamMatch, ...] = ()
    method: str | None = None

    def rank(self, request: RequestView) -> tuple[int, int, int, int, int] | None:
        """How specifically this matches ``request``, or ``None`` if it does not."""
        if self.method is not None and request.method != self.method:
            return None
        if self.path is not None and not self.path.matches(request.path):
            return None
        if not all(h.matches(request) for h in self.headers):
            return None
        if not all(q.matches(request) for q in self.query_params):
            return None
        # Without a path match Gateway API means PathPrefix "/", and ranks it as one.
        path_rank = self.path.rank if self.path is not None else _DEFAULT_PATH_RANK
        return (
            *path_rank,
            int(self.method is not None),
            len(self.headers),
            len(self.query_params),
        )


@dataclass(frozen=True, slots=True)
class HostMatch:
    """An exact hostname, or a wildcard suffix as reversed labels (``*.a.com`` → com, a)."""

    exact: str | None = None
    suffix: tuple[str, ...] = ()

    def rank(self, host: str) -> tuple[int, int] | None:
        if self.exact is not None:
            return (2, len(self.exact)) if host == self.exact else None
        labels = host.split(".")[::-1]
        if len(labels) > len(self.suffix) and labels[: len(self.suffix)] == list(self.suffix):
            return (1, len(self.suffix))
        return None


def compile_host_match(message: http_route_pb2.HostMatch) -> HostMatch:
    kind = message.WhichOneof("match")
    if kind == "exact":
        return HostMatch(exact=message.exact.lower().rstrip("."))
    if kind == "suffix":
        return HostMatch(suffix=tuple(label.lower() for label in message.suffix.reverse_labels))
    raise RouteError("HostMatch has neither exact nor suffix set")


def _compile_path(message: http_route_pb2.PathMatch) -> PathMatch:
    kind = message.WhichOneof("kind")
    if kind == "exact":
        return PathMatch("exact", message.exact)
    if kind == "prefix":
        return PathMatch("prefix", message.prefix)
    if kind == "regex":
        return PathMatch("regex", message.regex, _compile(message.regex, "path"))
    raise RouteError("PathMatch has no kind set")


def compile_header_match(message: http_route_pb2.HeaderMatch) -> HeaderMatch:
    if not message.name:
        raise RouteError("HeaderMatch has an empty name")
    name = message.name.lower().encode("latin-1")
    kind = message.WhichOneof("value")
    if kind == "exact":
        return HeaderMatch(name, exact=message.exact)
    if kind == "regex":
        return HeaderMatch(name, regex=_compile(message.regex.encode("utf-8"), "header"))
    raise RouteError(f"HeaderMatch for {message.name!r} has no value set")


def _compile_query(message: http_route_pb2.QueryParamMatch) -> QueryParamMatch:
    if not message.name:
        raise RouteError("QueryParamMatch has an empty name")
    kind = message.WhichOneof("value")
    if kind == "exact":
        return QueryParamMatch(message.name, exact=message.exact)
    if kind == "regex":
        return QueryParamMatch(message.name, regex=_compile(message.regex, "query parameter"))
    raise RouteError(f"QueryParamMatch for {message.name!r} has no value set")


def compile_route_match(message: http_route_pb2.HttpRouteMatch) -> RouteMatch:
    return RouteMatch(
        path=_compile_path(message.path) if message.HasField("path") else None,
        headers=tuple(compile_header_match(h) for h in message.headers),
        query_params=tuple(_compile_query(q) for q in message.query_params),
        method=method_from_proto(message.method) if message.HasField("method") else None,
    )


@dataclass(frozen=True, slots=True)
class RouteRule(Generic[T]):
    """A rule: any of ``matches`` (none = everything) selects ``action``."""

    matches: tuple[RouteMatch, ...]
    action: T

    def rank(self, request: RequestView) -> tuple[int, int, int, int, int] | None:
        if not self.matches:
            return (*_DEFAULT_PATH_RANK, 0, 0, 0)
        ranks = [r for r in (m.rank(request) for m in self.matches) if r is not None]
        return max(ranks) if ranks else None


@dataclass(frozen=True, slots=True)
class HttpRoute(Generic[T]):
    hosts: tuple[HostMatch, ...]
    rules: tuple[RouteRule[T], ...]

    def host_rank(self, host: str) -> tuple[int, int] | None:
        if not self.hosts:
            return (0, 0)
        ranks = [r for r in (h.rank(host) for h in self.hosts) if r is not None]
        return max(ranks) if ranks else None


def find_route(
    routes: Sequence[HttpRoute[T]], request: RequestView
) -> tuple[HttpRoute[T], RouteRule[T]] | None:
    """The most specific (route, rule) for ``request``, or ``None`` (the caller answers 404)."""
    best: tuple[HttpRoute[T], RouteRule[T]] | None = None
    best_rank: tuple[int, ...] = ()
    host = request.host
    for route in routes:
        host_rank = route.host_rank(host)
        if host_rank is None:
            continue
        for rule in route.rules:
            rule_rank = rule.rank(request)
            if rule_rank is None:
                continue
            rank = (*host_rank, *rule_rank)
            if best is None or rank > best_rank:
                best, best_rank = (route, rule), rank
    return best
