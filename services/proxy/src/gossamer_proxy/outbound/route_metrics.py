"""``route_*`` metrics for requests that matched a ServiceProfile route (linkerd-wire.md §8).

Linkerd counts per-route traffic separately from the per-target families:
``route_request_total``, ``route_response_total`` (with the route's own classification,
which honours the profile's response classes) and ``route_response_latency_ms``, labelled
with the logical destination ``dst`` (``<service fqn>:<port>``) and ``rt_route``. Retries
are visible as ``route_actual_request_total`` (every attempt sent to an endpoint) exceeding
``route_request_total``. Children are cached per (dst, route), so a request costs a few
dict lookups.
"""

from __future__ import annotations

from gossamer_common.metrics import LATENCY_MS_BUCKETS, Counter, Histogram, Registry

from ..mesh.classify import Classification
from ..mesh.profile import ProfileRoute

__all__ = ["RouteMetrics", "RouteStats"]

_LABELS = ("direction", "dst", "rt_route")


class RouteStats:
    """The children for one (dst, route); held by each request on that route."""

    __slots__ = ("_key", "_metrics", "_responses", "actual", "latency", "requests")

    def __init__(self, metrics: RouteMetrics, key: tuple[str, str, str]) -> None:
        self._metrics = metrics
        self._key = key
        self.requests: Counter = metrics.requests.labels(*key)
        self.actual: Counter = metrics.actual.labels(*key)
        self.latency: Histogram = metrics.latency.labels(*key)
        self._responses: dict[tuple[int, str], Counter] = {}

    def response(self, status: int, classification: Classification, latency_ms: float) -> None:
        key = (status, classification.value)
        counter = self._responses.get(key)
        if counter is None:
            counter = self._metrics.responses.labels(
                *self._key, str(status) if status else "", classification.value
            )
            self._responses[key] = counter
        counter.value += 1
        self.latency.observe(latency_ms)


class RouteMetrics:
    def __init__(self, registry: Registry) -> None:
        self.requests = registry.counter_family(
            "route_request_total", "Total count of HTTP requests on a profile route.", _LABELS
        )
        self.actual = registry.counter_family(
            "route_actual_request_total",
            "Total count of HTTP requests sent to endpoints on a profile route, retries included.",
            _LABELS,
        )
        self.responses = registry.counter_family(
            "route_response_total",
            "Total count of HTTP responses on a profile route.",
            (*_LABELS, "status_code", "classification"),
        )
        self.latency = registry.histogram_family(
            "route_response_latency_ms",
            "Elapsed times between a profile route's request and its response head",
            _LABELS,
            LATENCY_MS_BUCKETS,
        )
        self._stats: dict[tuple[str, str, str], RouteStats] = {}

    def stats(self, dst: str, route: ProfileRoute) -> RouteStats:
        name = dict(route.labels).get("route", "")
        key = ("outbound", dst, name)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = RouteStats(self, key)
        return stats
