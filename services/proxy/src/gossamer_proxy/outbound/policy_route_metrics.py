"""Linkerd's current outbound route families, beside the legacy ``route_*`` ones.

For requests routed by an outbound policy (``HTTPRoute``/``GRPCRoute``), as linkerd2-proxy's
``linkerd/app/outbound/src/http/logical/policy/route/metrics`` records them:

- ``outbound_http_route_request_duration_seconds`` (histogram, buckets 0.05, 0.5, 1, 10)
  and ``outbound_http_route_request_statuses_total`` (``http_status``, ``error``), labelled
  ``parent_*``, ``route_*`` and ``hostname``;
- ``outbound_http_route_backend_requests_total``,
  ``outbound_http_route_backend_response_duration_seconds`` (buckets 0.025 … 10) and
  ``outbound_http_route_backend_response_statuses_total``, labelled ``parent_*``,
  ``route_*`` and ``backend_*``;
- the same five as ``outbound_grpc_route_*``, with ``grpc_status`` (``OK``, ``NOT_FOUND``,
  …) in place of ``http_status``;
- ``outbound_http_balancer_endpoints`` (gauge, ``endpoint_state="ready|pending"``),
  labelled ``parent_*`` and ``backend_*`` (:func:`balancer_labels`; the gauge itself is
  refreshed by :meth:`..discovery.OutboundDiscovery.housekeeping`).

``parent_*`` and ``backend_*`` are ``group, kind, namespace, name, port, section_name``;
``route_*`` are ``group, kind, namespace, name``. ``error`` is Linkerd's label for a request
that ended without a response from the backend (``FAIL_FAST``, ``LOAD_SHED``,
``RESPONSE_HEADERS_TIMEOUT``, ``REQUEST_TIMEOUT``, ``RESET``, ``UNKNOWN``).

Cost per request: the series of a route are resolved once and cached by the identity of
the policy's ``RouteAction`` (and the request's hostname, at most :data:`MAX_HOSTNAMES` per
route); a request then holds :class:`RouteSeries`/:class:`BackendSeries` and touches a
histogram and a counter found by one dict lookup on ``(status, error)``.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from gossamer_common.metrics import Counter, Family, Histogram, Registry

from ..errors import ProxyErrorKind
from ..mesh.authz import MetaLabels
from ..mesh.outbound_policy import BackendSpec, RouteAction

__all__ = [
    "BALANCER_LABELS",
    "BackendSeries",
    "PolicyRouteMetrics",
    "RouteSeries",
    "balancer_labels",
    "default_route_series",
    "error_label",
    "grpc_status_name",
    "record_end",
    "service_meta",
]

REQUEST_BUCKETS: Final = (0.05, 0.5, 1.0, 10.0)
RESPONSE_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0)
MAX_HOSTNAMES: Final = 32
_MAX_ROUTES: Final = 4096

_PARENT = tuple(
    f"parent_{n}" for n in ("group", "kind", "namespace", "name", "port", "section_name")
)
_ROUTE = ("route_group", "route_kind", "route_namespace", "route_name")
_BACKEND = tuple(
    f"backend_{n}" for n in ("group", "kind", "namespace", "name", "port", "section_name")
)

_GRPC_NAMES: Final = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
)  # fmt: skip

_ERRORS: Final = {
    ProxyErrorKind.FAIL_FAST: "FAIL_FAST",
    ProxyErrorKind.LOAD_SHED: "LOAD_SHED",
    ProxyErrorKind.RESPONSE_TIMEOUT: "RESPONSE_HEADERS_TIMEOUT",
    ProxyErrorKind.UPSTREAM_RESET: "RESET",
}


def grpc_status_name(code: int | None) -> str:
    """Linkerd's ``grpc_status`` label: the code's name; a missing or unknown code is UNKNOWN."""
    if code is None or not 0 <= code < len(_GRPC_NAMES):
        return "UNKNOWN"
    return _GRPC_NAMES[code]


def error_label(kind: ProxyErrorKind) -> str:
    return _ERRORS.get(kind, "UNKNOWN")


def _service_labels(meta: MetaLabels | None) -> tuple[str, ...]:
    if meta is None:
        return ("", "", "", "", "", "")
    port = str(meta.port) if meta.port else ""
    return (meta.group, meta.kind, meta.namespace, meta.name, port, meta.section)


BALANCER_LABELS: Final = (*_PARENT, *_BACKEND, "endpoint_state")


def service_meta(authority: str) -> MetaLabels | None:
    """The Service an authority names (``name.ns.svc.<domain>:port``), as policy metadata."""
    host, _, port = authority.rpartition(":")
    parts = host.split(".")
    if len(parts) < 3 or parts[2] != "svc" or not (port.isascii() and port.isdigit()):
        return None
    return MetaLabels("core", "Service", parts[0], parts[1], "", int(port))


def balancer_labels(
    parent: MetaLabels | None, backend: MetaLabels | None, state: str
) -> tuple[str, ...]:
    """``outbound_http_balancer_endpoints`` label values, in :data:`BALANCER_LABELS` order."""
    return (*_service_labels(parent), *_service_labels(backend), state)


def _hostname(host: bytes | None) -> str:
    """The request's host as a DNS name (no port); IP addresses and junk give ``""``."""
    if not host:
        return ""
    text = host.decode("latin-1")
    if text.startswith("["):
        return ""
    name = text.rsplit(":", 1)[0] if text.count(":") == 1 else text
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return ""
    name = name.rstrip(".").lower()
    if not name or len(name) > 253 or not all(c.isalnum() or c in "-." for c in name):
        return ""
    return name


class _Families:
    __slots__ = (
        "backend_duration",
        "backend_requests",
        "backend_statuses",
        "duration",
        "statuses",
    )

    def __init__(self, registry: Registry, proto: str, status_label: str) -> None:
        route = (*_PARENT, *_ROUTE)
        prefix = f"outbound_{proto}_route"
        self.duration: Family[Histogram] = registry.histogram_family(
            f"{prefix}_request_duration_seconds",
            f"The time between {proto} route requests and their responses.",
            (*route, "hostname"),
            REQUEST_BUCKETS,
        )
        self.statuses: Family[Counter] = registry.counter_family(
            f"{prefix}_request_statuses_total",
            f"Completed {proto} route request responses.",
            (*route, "hostname", status_label, "error"),
        )
        self.backend_requests: Family[Counter] = registry.counter_family(
            f"{prefix}_backend_requests_total",
            f"The total number of {proto} requests dispatched to a route backend.",
            (*route, *_BACKEND),
        )
        self.backend_duration: Family[Histogram] = registry.histogram_family(
            f"{prefix}_backend_response_duration_seconds",
            f"The time between {proto} route backend requests and their responses.",
            (*route, *_BACKEND),
            RESPONSE_BUCKETS,
        )
        self.backend_statuses: Family[Counter] = registry.counter_family(
            f"{prefix}_backend_response_statuses_total",
            f"Completed {proto} route backend responses.",
            (*route, *_BACKEND, status_label, "error"),
        )


def _status_key(grpc: bool, status: int, grpc_status: int | None, error: str) -> tuple[str, str]:
    if grpc:
        return (grpc_status_name(grpc_status) if not error else "UNKNOWN", error)
    return (str(status) if status and not error else "", error)


class BackendSeries:
    """One (route, backend)'s series; held by each request dispatched to it."""

    __slots__ = ("_fam", "_grpc", "_labels", "_statuses", "duration", "requests")

    def __init__(self, fam: _Families, grpc: bool, labels: tuple[str, ...]) -> None:
        self._fam = fam
        self._grpc = grpc
        self._labels = labels
        self.requests: Counter = fam.backend_requests.labels(*labels)
        self.duration: Histogram = fam.backend_duration.labels(*labels)
        self._statuses: dict[object, Counter] = {}

    def response(self, status: int, grpc_status: int | None, error: str, seconds: float) -> None:
        self.duration.observe(seconds)
        key = grpc_status if self._grpc and not error else (status, error)
        counter = self._statuses.get(key)
        if counter is None:
            values = _status_key(self._grpc, status, grpc_status, error)
            counter = self._statuses[key] = self._fam.backend_statuses.labels(
                *self._labels, *values
            )
        counter.value += 1


class RouteSeries:
    """One (parent, route, hostname)'s series; held by each request on that route."""

    __slots__ = ("_backends", "_fam", "_grpc", "_labels", "_statuses", "duration", "route_labels")

    def __init__(self, fam: _Families, grpc: bool, route_labels: tuple[str, ...], host: str):
        self._fam = fam
        self._grpc = grpc
        self.route_labels = route_labels
        self._labels = (*route_labels, host)
        self.duration: Histogram = fam.duration.labels(*self._labels)
        self._statuses: dict[object, Counter] = {}
        self._backends: dict[int, tuple[BackendSpec, BackendSeries]] = {}

    def backend(self, spec: BackendSpec) -> BackendSeries:
        """The series of ``spec`` under this route (resolved once per backend)."""
        found = self._backends.get(id(spec))
        if found is not None and found[0] is spec:
            return found[1]
        series = BackendSeries(
            self._fam, self._grpc, (*self.route_labels, *_service_labels(spec.meta))
        )
        if len(self._backends) >= 64:
            self._backends.clear()
        self._backends[id(spec)] = (spec, series)
        return series

    def response(self, status: int, grpc_status: int | None, error: str, seconds: float) -> None:
        """The request ended: its status (or ``error``) and its duration."""
        self.duration.observe(seconds)
        key = grpc_status if self._grpc and not error else (status, error)
        counter = self._statuses.get(key)
        if counter is None:
            values = _status_key(self._grpc, status, grpc_status, error)
            counter = self._statuses[key] = self._fam.statuses.labels(*self._labels, *values)
        counter.value += 1


class _RouteEntry:
    __slots__ = ("action", "by_host", "labels", "parent")

    def __init__(
        self, parent: MetaLabels | None, action: RouteAction, labels: tuple[str, ...]
    ) -> None:
        self.parent = parent
        self.action = action
        self.labels = labels
        self.by_host: dict[bytes | None, RouteSeries] = {}


class PolicyRouteMetrics:
    """The families and the per-route cache; one per proxy."""

    def __init__(self, registry: Registry) -> None:
        self._http = _Families(registry, "http", "http_status")
        self._grpc = _Families(registry, "grpc", "grpc_status")
        self._routes: dict[tuple[int, int, bool], _RouteEntry] = {}

    def route(
        self,
        parent: MetaLabels | None,
        action: RouteAction,
        host: bytes | None,
        *,
        grpc: bool = False,
    ) -> RouteSeries:
        """The series for a request routed by ``action`` (a rule of ``parent``'s policy)."""
        key = (id(parent), id(action), grpc)
        entry = self._routes.get(key)
        if entry is None or entry.action is not action or entry.parent is not parent:
            if len(self._routes) >= _MAX_ROUTES:  # old policies' routes: start afresh
                self._routes.clear()
            meta = action.meta
            labels = (
                *_service_labels(parent),
                meta.group,
                meta.kind,
                meta.namespace,
                meta.name,
            )
            entry = self._routes[key] = _RouteEntry(parent, action, labels)
        series = entry.by_host.get(host)
        if series is None:
            name = _hostname(host) if len(entry.by_host) < MAX_HOSTNAMES else ""
            fam = self._grpc if grpc else self._http
            series = RouteSeries(fam, grpc, entry.labels, name)
            if len(entry.by_host) < MAX_HOSTNAMES:
                entry.by_host[host] = series
        return series


def default_route_series(
    metrics: PolicyRouteMetrics,
    default: tuple[MetaLabels, RouteAction] | None,
    host: bytes | None,
    *,
    grpc: bool = False,
) -> tuple[RouteSeries | None, BackendSeries | None]:
    """The series of a request on the Service's default route, its one backend counted."""
    if default is None:
        return None, None
    parent, action = default
    route = metrics.route(parent, action, host, grpc=grpc)
    backends = action.ordered_backends or action.backends.backends
    if not backends:
        return route, None
    backend = route.backend(backends[0])
    backend.requests.value += 1
    return route, backend


def record_end(
    route: RouteSeries,
    backend: BackendSeries | None,
    status: int,
    grpc_status: int | None,
    error: str,
    seconds: float,
) -> None:
    """A policy-routed request ended: count it on its route and on its backend (if any)."""
    route.response(status, grpc_status, error, seconds)
    if backend is not None:
        backend.response(status, grpc_status, error, seconds)
