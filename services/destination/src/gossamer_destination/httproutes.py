"""Gateway-API-shaped HTTPRoute pieces (matches, filters) to ``http_route`` protos (pure).

Shared by the inbound and outbound policy translations. Anything the proxy could not apply
(a regex that does not compile, an unsupported match type or filter) raises
:class:`InvalidRouteError`, and the caller skips that route with a log line and a metric.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gossamer_api.proxy import grpc_route_pb2, http_route_pb2, http_types_pb2
from gossamer_common.linear_regex import RegexError, compile_linear

from gossamer_destination.profiles import http_method

POLICY_GROUP = "policy.linkerd.io"
GATEWAY_GROUP = "gateway.networking.k8s.io"


class InvalidRouteError(ValueError):
    """The route cannot be translated; it is skipped."""


def _regex(value: str) -> str:
    try:
        compile_linear(value)
    except RegexError as exc:
        raise InvalidRouteError(f"invalid regex {value!r}: {exc}") from exc
    return value


def host_match(hostname: str) -> http_route_pb2.HostMatch:
    if hostname.startswith("*."):
        labels = hostname[2:].split(".")
        return http_route_pb2.HostMatch(
            suffix=http_route_pb2.HostMatch.Suffix(reverse_labels=list(reversed(labels)))
        )
    return http_route_pb2.HostMatch(exact=hostname)


def _header_match(header: Mapping[str, Any]) -> http_route_pb2.HeaderMatch:
    kind = header.get("type", "Exact")
    name = str(header.get("name") or "")
    if not name:
        raise InvalidRouteError("header match without name")
    hm = http_route_pb2.HeaderMatch(name=name)
    if kind == "Exact":
        hm.exact = str(header.get("value", "")).encode()
    elif kind == "RegularExpression":
        hm.regex = _regex(str(header.get("value", "")))
    else:
        raise InvalidRouteError(f"unknown header match type {kind!r}")
    return hm


def route_match(match: Mapping[str, Any]) -> http_route_pb2.HttpRouteMatch:
    out = http_route_pb2.HttpRouteMatch()
    path = match.get("path")
    if path is not None:
        kind = path.get("type", "PathPrefix")
        value = str(path.get("value", "/"))
        if kind == "Exact":
            out.path.exact = value
        elif kind == "PathPrefix":
            out.path.prefix = value
        elif kind == "RegularExpression":
            out.path.regex = _regex(value)
        else:
            raise InvalidRouteError(f"unknown path match type {kind!r}")
    for header in match.get("headers") or ():
        out.headers.append(_header_match(header))
    for param in match.get("queryParams") or ():
        kind = param.get("type", "Exact")
        qm = http_route_pb2.QueryParamMatch(name=str(param.get("name") or ""))
        if kind == "Exact":
            qm.exact = str(param.get("value", ""))
        elif kind == "RegularExpression":
            qm.regex = _regex(str(param.get("value", "")))
        else:
            raise InvalidRouteError(f"unknown query param match type {kind!r}")
        out.query_params.append(qm)
    if match.get("method"):
        out.method.CopyFrom(http_method(str(match["method"])))
    return out


def rule_matches(rule: Mapping[str, Any]) -> list[http_route_pb2.HttpRouteMatch]:
    """A rule without matches matches every path (``PathPrefix /``)."""
    matches = [route_match(m) for m in rule.get("matches") or ()]
    if not matches:
        matches = [http_route_pb2.HttpRouteMatch(path=http_route_pb2.PathMatch(prefix="/"))]
    return matches


def _headers(items: Any) -> http_types_pb2.Headers:
    return http_types_pb2.Headers(
        headers=[
            http_types_pb2.Headers.Header(
                name=str(h["name"]), value=str(h.get("value", "")).encode()
            )
            for h in items or ()
        ]
    )


def header_modifier(spec: Mapping[str, Any]) -> http_route_pb2.RequestHeaderModifier:
    return http_route_pb2.RequestHeaderModifier(
        add=_headers(spec.get("add")),
        set=_headers(spec.get("set")),
        remove=[str(r) for r in spec.get("remove") or ()],
    )


def response_header_modifier(spec: Mapping[str, Any]) -> http_route_pb2.ResponseHeaderModifier:
    return http_route_pb2.ResponseHeaderModifier(
        add=_headers(spec.get("add")),
        set=_headers(spec.get("set")),
        remove=[str(r) for r in spec.get("remove") or ()],
    )


def redirect(spec: Mapping[str, Any]) -> http_route_pb2.RequestRedirect:
    out = http_route_pb2.RequestRedirect(
        host=str(spec.get("hostname") or ""),
        port=int(spec.get("port") or 0),
        status=int(spec.get("statusCode") or 302),
    )
    scheme = spec.get("scheme")
    if scheme:
        if scheme.lower() in ("http", "https"):
            out.scheme.registered = http_types_pb2.Scheme.Registered.Value(scheme.upper())
        else:
            out.scheme.unregistered = scheme
    path = spec.get("path")
    if path:
        kind = path.get("type")
        if kind == "ReplaceFullPath":
            out.path.full = str(path.get("replaceFullPath", ""))
        elif kind == "ReplacePrefixMatch":
            out.path.prefix = str(path.get("replacePrefixMatch", ""))
        else:
            raise InvalidRouteError(f"unknown redirect path type {kind!r}")
    return out


def parent_refs(route: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((route.get("spec") or {}).get("parentRefs") or ())


def route_sort_key(route: Mapping[str, Any]) -> tuple[str, str]:
    """Linkerd orders routes by creation time, then name."""
    m = route.get("metadata") or {}
    return (str(m.get("creationTimestamp") or ""), str(m.get("name") or ""))


# -- Gateway API GRPCRoute -----------------------------------------------------------------------


def grpc_route_match(match: Mapping[str, Any]) -> grpc_route_pb2.GrpcRouteMatch:
    """A GRPCRoute match: ``method {type: Exact, service, method}`` and header matches."""
    out = grpc_route_pb2.GrpcRouteMatch()
    method = match.get("method")
    if method is not None:
        kind = method.get("type", "Exact")
        if kind != "Exact":
            raise InvalidRouteError(f"unsupported GRPCRoute method match type {kind!r}")
        service, name = str(method.get("service") or ""), str(method.get("method") or "")
        if not service and not name:
            raise InvalidRouteError("a GRPCRoute method match needs a service or a method")
        for part in (service, name):
            if "/" in part:
                raise InvalidRouteError(f"gRPC service/method {part!r} contains '/'")
        out.rpc.service = service
        out.rpc.method = name
    for header in match.get("headers") or ():
        out.headers.append(_header_match(header))
    return out


def grpc_rule_matches(rule: Mapping[str, Any]) -> list[grpc_route_pb2.GrpcRouteMatch]:
    """A rule without matches matches every RPC."""
    matches = [grpc_route_match(m) for m in rule.get("matches") or ()]
    return matches or [grpc_route_pb2.GrpcRouteMatch()]


def grpc_as_http_match(match: grpc_route_pb2.GrpcRouteMatch) -> http_route_pb2.HttpRouteMatch:
    """The HTTP form of a gRPC match (``POST /<service>/<method>``), for HTTP Servers."""
    out = http_route_pb2.HttpRouteMatch(headers=list(match.headers))
    out.method.CopyFrom(http_method("POST"))
    service, name = match.rpc.service, match.rpc.method
    if service and name:
        out.path.exact = f"/{service}/{name}"
    elif service:
        out.path.prefix = f"/{service}/"
    elif name:
        out.path.regex = f"/[^/]+/{re.escape(name)}"
    else:
        out.path.prefix = "/"
    return out


def route_group(route: Mapping[str, Any]) -> str:
    """The API group of a route object (``policy.linkerd.io`` or Gateway API)."""
    api_version = str(route.get("apiVersion") or "")
    return api_version.partition("/")[0] if "/" in api_version else POLICY_GROUP


def route_kind(route: Mapping[str, Any]) -> str:
    return str(route.get("kind") or "HTTPRoute")


# -- parent refs -----------------------------------------------------------------------------


def parent_namespace(ref: Mapping[str, Any], route: Mapping[str, Any]) -> str:
    return str(ref.get("namespace") or (route.get("metadata") or {}).get("namespace") or "")


def is_service_parent(ref: Mapping[str, Any]) -> bool:
    return ref.get("kind") == "Service" and (ref.get("group") or "core") in ("core", "")


def is_server_parent(ref: Mapping[str, Any]) -> bool:
    return ref.get("kind") == "Server" and (ref.get("group") or POLICY_GROUP) == POLICY_GROUP


def attaches_to_service(
    route: Mapping[str, Any], namespace: str, name: str, port: int | None = None
) -> bool:
    """Whether one of the route's parentRefs is this Service (and port, when it names one)."""
    return any(
        is_service_parent(ref)
        and ref.get("name") == name
        and parent_namespace(ref, route) == namespace
        and (port is None or ref.get("port") in (None, port))
        for ref in parent_refs(route)
    )


def attaches_to_server(route: Mapping[str, Any], namespace: str, name: str) -> bool:
    return any(
        is_server_parent(ref)
        and ref.get("name") == name
        and parent_namespace(ref, route) == namespace
        for ref in parent_refs(route)
    )
