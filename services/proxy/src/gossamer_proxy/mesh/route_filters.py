"""HTTPRoute / GRPCRoute filters from ``OutboundPolicies``, compiled once and applied per request.

A policy rule (and each of its ``RouteBackend``s) carries a list of ``Filter`` protos
(linkerd-wire.md §1.4, §1.8):

* ``request_header_modifier`` / ``response_header_modifier``: ``add`` appends a value,
  ``set`` replaces every value of a header, ``remove`` drops it (applied in that order, as
  Linkerd's proxy does);
* ``redirect`` (HTTP only): the proxy answers the request itself with a 3xx and a
  ``Location`` built from the request (scheme, host, port, path with a full or
  matched-prefix replacement, query kept);
* ``failure_injector``: with probability ``numerator/denominator`` (always, without a
  ratio) the proxy answers with the configured HTTP status — or, for gRPC routes, a gRPC
  status — and the message in ``l5d-proxy-error`` / ``grpc-message``.

:func:`compile_filters` runs when the policy is compiled, so the data path only applies
frozen objects. A filter it cannot use (unknown kind, bad header name, non-3xx redirect
status, zero ratio denominator…) never crashes the proxy nor rejects the whole policy: like
Linkerd's ``invalid`` filter, the compiled :class:`RouteFilters` remembers why, and every
request on the route is answered with a 500 (gRPC ``INTERNAL``) carrying that reason.

Nothing here does I/O or reads a clock; randomness comes in as an argument.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gossamer_proxy.mesh.backoff import UniformSource
from gossamer_proxy.mesh.classify import GrpcStatus

__all__ = [
    "NO_FILTERS",
    "FailureInjector",
    "FilterError",
    "HeaderModifier",
    "Redirect",
    "RequestTarget",
    "RouteFilters",
    "SyntheticResponse",
    "compile_filters",
]

Headers = list[tuple[bytes, bytes]]

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9a-zA-Z]+$")
#: Headers that frame or steer the HTTP/1 connection: a filter rewriting them would let a
#: route desynchronise client and server, so such filters are refused as invalid.
_FORBIDDEN = frozenset(
    {
        b"connection",
        b"content-length",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


class FilterError(ValueError):
    """A route filter cannot be applied (the route answers 500 with this message)."""


@dataclass(frozen=True, slots=True)
class SyntheticResponse:
    """A response the proxy gives in place of forwarding the request.

    ``headers`` are the response's own (``location`` for redirects, ``l5d-proxy-error``
    for injected failures); ``grpc_status``/``grpc_message`` are set for gRPC routes, whose
    clients expect HTTP 200 with a gRPC status.
    """

    status: int
    headers: tuple[tuple[bytes, bytes], ...] = ()
    grpc_status: int | None = None
    grpc_message: str | None = None


@dataclass(frozen=True, slots=True)
class RequestTarget:
    """What a redirect needs to know about the request being redirected.

    ``matched_prefix`` is the ``PathPrefix`` value the route matched on (``"/"`` for a rule
    without a path match), ``None`` when the rule matched by exact path or regex.
    """

    scheme: str = "http"
    authority: str = ""
    path: str = "/"
    query: str = ""
    matched_prefix: str | None = "/"


def _header_name(name: str, what: str) -> bytes:
    raw = name.encode("latin-1", "replace").lower()
    if not _TOKEN.match(raw):
        raise FilterError(f"{what}: invalid header name {name!r}")
    if raw in _FORBIDDEN:
        raise FilterError(f"{what}: header {name!r} frames the connection and cannot be modified")
    return raw


def _header_value(value: bytes, name: bytes, what: str) -> bytes:
    if any(b in value for b in (0, 10, 13)):
        raise FilterError(f"{what}: value of {name.decode()!r} contains CR, LF or NUL")
    return value


@dataclass(frozen=True, slots=True)
class HeaderModifier:
    """``RequestHeaderModifier`` / ``ResponseHeaderModifier`` (names are lower-case)."""

    add: tuple[tuple[bytes, bytes], ...] = ()
    set: tuple[tuple[bytes, bytes], ...] = ()
    remove: frozenset[bytes] = frozenset()

    def apply(self, headers: Sequence[tuple[bytes, bytes]]) -> Headers:
        out = list(headers)
        out.extend(self.add)
        if self.set:
            replaced = {name for name, _ in self.set}
            out = [(n, v) for n, v in out if n.lower() not in replaced]
            out.extend(self.set)
        if self.remove:
            out = [(n, v) for n, v in out if n.lower() not in self.remove]
        return out


def _modifier(message: Any, what: str) -> HeaderModifier:
    def pairs(headers: Any) -> tuple[tuple[bytes, bytes], ...]:
        out = []
        for h in headers.headers:
            name = _header_name(h.name, what)
            out.append((name, _header_value(bytes(h.value), name, what)))
        return tuple(out)

    return HeaderModifier(
        add=pairs(message.add),
        set=pairs(message.set),
        remove=frozenset(_header_name(n, what) for n in message.remove),
    )


@dataclass(frozen=True, slots=True)
class Redirect:
    """``RequestRedirect``: empty fields keep the request's own value."""

    status: int = 302
    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    full_path: str | None = None
    prefix_path: str | None = None

    def location(self, request: RequestTarget) -> bytes:
        scheme = self.scheme or request.scheme or "http"
        host, port = _split_authority(request.authority)
        if self.host:
            host = self.host
        if self.port:
            port = self.port
        elif self.scheme:
            port = None  # a scheme change implies that scheme's well-known port
        if port == _DEFAULT_PORTS.get(scheme):
            port = None
        path = request.path
        if self.full_path is not None:
            path = self.full_path
        elif self.prefix_path is not None:
            if request.matched_prefix is None:
                raise FilterError("redirect: a path prefix replacement needs a PathPrefix match")
            path = _replace_prefix(path, request.matched_prefix, self.prefix_path)
        authority = host if port is None else f"{host}:{port}"
        query = f"?{request.query}" if request.query else ""
        return f"{scheme}://{authority}{path}{query}".encode("latin-1", "replace")


def _split_authority(authority: str) -> tuple[str, int | None]:
    if authority.startswith("["):
        end = authority.find("]")
        host, rest = authority[: end + 1], authority[end + 1 :]
        return host, int(rest[1:]) if rest[1:].isascii() and rest[1:].isdigit() else None
    host, sep, port = authority.rpartition(":")
    if sep and port.isascii() and port.isdigit():
        return host, int(port)
    return authority, None


def _replace_prefix(path: str, prefix: str, replacement: str) -> str:
    """Gateway API ``ReplacePrefixMatch``: ``/foo/bar`` matched by ``/foo`` → ``/new/bar``."""
    rest = path[len(prefix.rstrip("/")) :]
    new = replacement.rstrip("/") + rest
    if not new.startswith("/"):
        new = "/" + new
    return new


def _redirect(message: Any) -> Redirect:
    status = message.status or 302
    if not 300 <= status <= 399:
        raise FilterError(f"redirect: status {status} is not a redirection (3xx)")
    scheme: str | None = None
    if message.HasField("scheme"):
        kind = message.scheme.WhichOneof("type")
        if kind == "registered":
            scheme = "https" if message.scheme.registered == 1 else "http"
        elif kind == "unregistered":
            scheme = message.scheme.unregistered.lower()
            if not re.match(r"^[a-z][a-z0-9+.\-]*$", scheme):
                raise FilterError(f"redirect: invalid scheme {scheme!r}")
    if message.port > 65535:
        raise FilterError(f"redirect: invalid port {message.port}")
    host = message.host or None
    if host is not None and any(c in host for c in "/?#@ \r\n"):
        raise FilterError(f"redirect: invalid host {host!r}")
    full = prefix = None
    if message.HasField("path"):
        kind = message.path.WhichOneof("replace")
        if kind == "full":
            full = message.path.full
        elif kind == "prefix":
            prefix = message.path.prefix
        for value in (full, prefix):
            if value is not None and (not value.startswith("/") or any(c in value for c in "?# ")):
                raise FilterError(f"redirect: invalid path {value!r}")
    return Redirect(status, scheme, host, message.port or None, full, prefix)


@dataclass(frozen=True, slots=True)
class FailureInjector:
    """``HttpFailureInjector`` / ``GrpcFailureInjector``: fail a share of requests."""

    numerator: int
    denominator: int
    status: int = 500
    grpc_status: int | None = None
    message: str = "injected failure"

    def fires(self, rng: UniformSource) -> bool:
        if self.numerator >= self.denominator:
            return True
        if self.numerator == 0:
            return False
        return rng.random() * self.denominator < self.numerator

    def response(self) -> SyntheticResponse:
        error = _safe(self.message).encode("ascii")
        if self.grpc_status is not None:
            return SyntheticResponse(
                200, ((b"l5d-proxy-error", error),), self.grpc_status, self.message
            )
        return SyntheticResponse(self.status, ((b"l5d-proxy-error", error),))


def _ratio(message: Any, what: str) -> tuple[int, int]:
    if not message.HasField("ratio"):
        return 1, 1
    numerator, denominator = message.ratio.numerator, message.ratio.denominator
    if denominator == 0:
        raise FilterError(f"{what}: ratio denominator must not be 0")
    return numerator, denominator


def _http_failure(message: Any) -> FailureInjector:
    status = message.status or 500
    if not 100 <= status <= 599:
        raise FilterError(f"failure injector: invalid HTTP status {status}")
    numerator, denominator = _ratio(message, "failure injector")
    return FailureInjector(
        numerator, denominator, status=status, message=message.message or "injected failure"
    )


def _grpc_failure(message: Any) -> FailureInjector:
    code = message.code or int(GrpcStatus.UNKNOWN)
    try:
        GrpcStatus(code)
    except ValueError:
        raise FilterError(f"failure injector: invalid gRPC status code {code}") from None
    numerator, denominator = _ratio(message, "failure injector")
    return FailureInjector(
        numerator, denominator, grpc_status=code, message=message.message or "injected failure"
    )


def _safe(text: str) -> str:
    return "".join(c if 0x20 <= ord(c) < 0x7F else " " for c in text)


@dataclass(frozen=True, slots=True)
class RouteFilters:
    """The compiled filters of one rule or backend, in the order the policy lists them."""

    request_modifiers: tuple[HeaderModifier, ...] = ()
    response_modifiers: tuple[HeaderModifier, ...] = ()
    redirect: Redirect | None = None
    failures: tuple[FailureInjector, ...] = ()
    #: Why the filters are unusable; when set every request is answered 500 with it.
    error: str | None = None
    grpc: bool = False
    _empty: bool = field(default=False, compare=False)

    @property
    def empty(self) -> bool:
        """Nothing to do: the data path may skip filtering altogether."""
        return self._empty

    def apply_request(
        self,
        headers: Sequence[tuple[bytes, bytes]],
        rng: UniformSource,
        target: RequestTarget | None = None,
    ) -> Headers | SyntheticResponse:
        """The request headers to forward, or the response to answer with instead.

        ``target`` describes the request for redirects (without it a redirect answers 500).
        """
        if self.error is not None:
            return self._invalid(self.error)
        for failure in self.failures:
            if failure.fires(rng):
                return failure.response()
        if self.redirect is not None:
            try:
                if target is None:
                    raise FilterError("redirect: the request target is unknown")
                location = self.redirect.location(target)
            except FilterError as exc:
                return self._invalid(str(exc))
            return SyntheticResponse(self.redirect.status, ((b"location", location),))
        out = list(headers)
        for modifier in self.request_modifiers:
            out = modifier.apply(out)
        return out

    def apply_response(self, headers: Sequence[tuple[bytes, bytes]]) -> Headers:
        out = list(headers)
        for modifier in self.response_modifiers:
            out = modifier.apply(out)
        return out

    def _invalid(self, message: str) -> SyntheticResponse:
        text = _safe(f"invalid route filter: {message}")
        error = ((b"l5d-proxy-error", text.encode("ascii")),)
        if self.grpc:
            return SyntheticResponse(200, error, int(GrpcStatus.INTERNAL), text)
        return SyntheticResponse(500, error)


NO_FILTERS = RouteFilters(_empty=True)


def compile_filters(protos: Iterable[Any], *, grpc: bool = False) -> RouteFilters:
    """Compile ``outbound.HttpRoute.Filter`` (or ``GrpcRoute.Filter`` with ``grpc``) protos.

    Never raises: an unusable filter yields :class:`RouteFilters` with :attr:`~RouteFilters.error`
    set, which answers every request with a 500 naming the problem.
    """
    request: list[HeaderModifier] = []
    response: list[HeaderModifier] = []
    failures: list[FailureInjector] = []
    redirect: Redirect | None = None
    count = 0
    try:
        for message in protos:
            count += 1
            kind = message.WhichOneof("kind")
            if kind == "request_header_modifier":
                request.append(_modifier(message.request_header_modifier, "request headers"))
            elif kind == "response_header_modifier" and not grpc:
                response.append(_modifier(message.response_header_modifier, "response headers"))
            elif kind == "redirect" and not grpc:
                if redirect is not None:
                    raise FilterError("more than one redirect filter")
                redirect = _redirect(message.redirect)
            elif kind == "failure_injector":
                injector = message.failure_injector
                failures.append(_grpc_failure(injector) if grpc else _http_failure(injector))
            else:
                raise FilterError(f"unsupported filter {kind or 'with no kind'!r}")
    except FilterError as exc:
        return RouteFilters(error=str(exc), grpc=grpc)
    if count == 0:
        return NO_FILTERS if not grpc else RouteFilters(grpc=True, _empty=True)
    return RouteFilters(tuple(request), tuple(response), redirect, tuple(failures), grpc=grpc)
