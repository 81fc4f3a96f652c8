"""Tap's ``ObserveRequest.Match``, compiled once per tap into a predicate (sans-io).

:func:`compile_match` turns the proto tree into small matcher objects; each ``matches`` takes
a :class:`~gossamer_proxy.observe.ObservedRequest`-shaped view (addresses, labels, method,
scheme, authority, path) and touches nothing else. Semantics follow linkerd2-proxy's tap:

- no match at all (or a top-level match with nothing set), or an empty ``all``/``any``
  sequence, matches every request;
- ``source``/``destination``: a netmask (IPv4 or IPv6 address + prefix length) or an
  inclusive port range against the request's client / server address;
- ``http``: scheme (``http``/``https`` or another name), method (registered or not),
  authority and path by exact value or prefix;
- ``destination_label``/``route_label``: one label equal to a value.

Bad input (an unset oneof, a prefix length beyond the address, a port range out of
0..65535 or inverted, a tree nested deeper than :data:`MAX_DEPTH` or wider than
:data:`MAX_NODES`) raises :class:`InvalidMatchError` with the reason, so the caller answers
``INVALID_ARGUMENT`` and a hostile client cannot make the proxy recurse or allocate without
bound.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Final, Protocol

from gossamer_api.addresses import AddressError, ip_from_proto
from gossamer_api.proxy import http_types_pb2, tap_pb2

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "InvalidMatchError",
    "Matcher",
    "RequestFacts",
    "compile_match",
    "method_name",
    "scheme_name",
    "wants_headers",
]

MAX_DEPTH: Final = 16
MAX_NODES: Final = 256

Match = tap_pb2.ObserveRequest.Match
Address = tuple[str, int]

_METHODS: Final = {
    value: name.encode() for name, value in http_types_pb2.HttpMethod.Registered.items()
}
_SCHEMES: Final = {
    value: name.lower().encode() for name, value in http_types_pb2.Scheme.Registered.items()
}


class InvalidMatchError(ValueError):
    """An ``ObserveRequest.Match`` that cannot be used."""


class RequestFacts(Protocol):
    """What a match looks at (an :class:`~gossamer_proxy.observe.ObservedRequest`)."""

    @property
    def source(self) -> Address | None: ...

    @property
    def dst_addr(self) -> Address | None: ...

    @property
    def dst_labels(self) -> Mapping[str, str]: ...

    @property
    def route_labels(self) -> Mapping[str, str]: ...

    @property
    def method(self) -> bytes: ...

    @property
    def scheme(self) -> bytes: ...

    @property
    def authority(self) -> bytes: ...

    @property
    def path(self) -> bytes: ...


class Matcher:
    def matches(self, request: RequestFacts) -> bool:
        raise NotImplementedError


class _Always(Matcher):
    def matches(self, request: RequestFacts) -> bool:
        return True


class _All(Matcher):
    def __init__(self, children: tuple[Matcher, ...]) -> None:
        self.children = children

    def matches(self, request: RequestFacts) -> bool:
        return all(child.matches(request) for child in self.children)


class _Any(Matcher):
    def __init__(self, children: tuple[Matcher, ...]) -> None:
        self.children = children

    def matches(self, request: RequestFacts) -> bool:
        return not self.children or any(child.matches(request) for child in self.children)


class _Not(Matcher):
    def __init__(self, child: Matcher) -> None:
        self.child = child

    def matches(self, request: RequestFacts) -> bool:
        return not self.child.matches(request)


class _Netmask(Matcher):
    def __init__(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network, source: bool):
        self.network = network
        self.source = source

    def matches(self, request: RequestFacts) -> bool:
        addr = request.source if self.source else request.dst_addr
        if addr is None:
            return False
        try:
            ip = ipaddress.ip_address(addr[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.version == self.network.version and ip in self.network


class _Ports(Matcher):
    def __init__(self, low: int, high: int, source: bool) -> None:
        self.low, self.high, self.source = low, high, source

    def matches(self, request: RequestFacts) -> bool:
        addr = request.source if self.source else request.dst_addr
        return addr is not None and self.low <= addr[1] <= self.high


class _Field(Matcher):
    """An exact (or prefix) comparison of one request field."""

    def __init__(self, field: str, value: bytes, *, prefix: bool, fold: bool) -> None:
        self.field = field
        self.value = value.lower() if fold else value
        self.prefix = prefix
        self.fold = fold

    def matches(self, request: RequestFacts) -> bool:
        actual: bytes = getattr(request, self.field)
        if self.fold:
            actual = actual.lower()
        return actual.startswith(self.value) if self.prefix else actual == self.value


class _Label(Matcher):
    def __init__(self, key: str, value: str, route: bool) -> None:
        self.key, self.value, self.route = key, value, route

    def matches(self, request: RequestFacts) -> bool:
        labels = request.route_labels if self.route else request.dst_labels
        return labels.get(self.key) == self.value


def method_name(method: http_types_pb2.HttpMethod) -> bytes:
    """The method a proto ``HttpMethod`` names (``b""`` when unset)."""
    kind = method.WhichOneof("type")
    if kind == "registered":
        return _METHODS.get(method.registered, b"")
    if kind == "unregistered":
        return method.unregistered.encode("latin-1", "replace")
    return b""


def scheme_name(scheme: http_types_pb2.Scheme) -> bytes:
    kind = scheme.WhichOneof("type")
    if kind == "registered":
        return _SCHEMES.get(scheme.registered, b"")
    if kind == "unregistered":
        return scheme.unregistered.lower().encode("latin-1", "replace")
    return b""


class _Compiler:
    def __init__(self) -> None:
        self.nodes = 0

    def compile(self, match: Match, depth: int) -> Matcher:
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise InvalidMatchError(
                f"match is deeper than {MAX_DEPTH} or has over {MAX_NODES} nodes"
            )
        kind = match.WhichOneof("match")
        if kind == "all":
            return _All(tuple(self.compile(m, depth + 1) for m in match.all.matches))
        if kind == "any":
            return _Any(tuple(self.compile(m, depth + 1) for m in match.any.matches))
        if kind == "not":
            return _Not(self.compile(getattr(match, "not"), depth + 1))
        if kind == "source":
            return _tcp(match.source, source=True)
        if kind == "destination":
            return _tcp(match.destination, source=False)
        if kind == "http":
            return _http(match.http)
        if kind == "destination_label":
            return _label(match.destination_label, route=False)
        if kind == "route_label":
            return _label(match.route_label, route=True)
        raise InvalidMatchError("match has no condition set")


def _tcp(tcp: Match.Tcp, *, source: bool) -> Matcher:
    kind = tcp.WhichOneof("match")
    if kind == "netmask":
        try:
            ip = ip_from_proto(tcp.netmask.ip)
        except AddressError as exc:
            raise InvalidMatchError(f"netmask: {exc}") from exc
        if tcp.netmask.mask > ip.max_prefixlen:
            raise InvalidMatchError(f"netmask /{tcp.netmask.mask} is longer than the address")
        network = ipaddress.ip_network(f"{ip}/{tcp.netmask.mask}", strict=False)
        return _Netmask(network, source)
    if kind == "ports":
        low, high = tcp.ports.min, tcp.ports.max or tcp.ports.min
        if not 0 <= low <= high <= 65535:
            raise InvalidMatchError(f"port range {low}-{high} is not within 0-65535 in order")
        return _Ports(low, high, source)
    raise InvalidMatchError("tcp match has neither netmask nor ports")


def _http(http: Match.Http) -> Matcher:
    kind = http.WhichOneof("match")
    if kind == "scheme":
        scheme = scheme_name(http.scheme)
        if not scheme:
            raise InvalidMatchError("scheme match names no scheme")
        return _Field("scheme", scheme, prefix=False, fold=True)
    if kind == "method":
        method = method_name(http.method)
        if not method:
            raise InvalidMatchError("method match names no method")
        return _Field("method", method, prefix=False, fold=False)
    if kind in ("authority", "path"):
        string: Match.Http.StringMatch = getattr(http, kind)
        which = string.WhichOneof("match")
        if which is None:
            raise InvalidMatchError(f"{kind} match has neither exact nor prefix")
        value = getattr(string, which).encode("utf-8")
        return _Field(kind, value, prefix=which == "prefix", fold=kind == "authority")
    raise InvalidMatchError("http match has no condition set")


def _label(label: Match.Label, *, route: bool) -> Matcher:
    if not label.key:
        raise InvalidMatchError("label match has no key")
    return _Label(label.key, label.value, route)


def compile_match(request: tap_pb2.ObserveRequest) -> Matcher:
    """The request's match, compiled (no match at all: every request)."""
    if not request.HasField("match") or request.match.WhichOneof("match") is None:
        return _Always()
    return _Compiler().compile(request.match, 0)


def wants_headers(request: tap_pb2.ObserveRequest) -> bool:
    """Whether the tap extracts headers (``Extract.Http.Headers``)."""
    extract = request.extract
    return extract.WhichOneof("extract") == "http" and (
        extract.http.WhichOneof("extract") == "headers"
    )
