"""ServiceProfiles from ``Destination.GetProfile`` (sans-io): routes, classes, budget, split.

A ``DestinationProfile`` (linkerd-wire.md §1.5, §3.2) becomes a :class:`Profile`:

* routes, matched in order, first match wins; a ``RequestMatch`` is a tree of
  ``all``/``any``/``not`` over a path regex (anchored: it must match the whole path) and a
  method;
* per route, response classes (first matching class decides success or failure; with none,
  the default classification of :mod:`.classify`), ``is_retryable``, ``timeout`` and the
  ``rt_*`` metric labels;
* the retry budget (retries need both a retryable route *and* a budget);
* ``dst_overrides`` as a :class:`~.split.WeightedSplit` over authorities;
* ``opaque_protocol``, and ``endpoint`` for a single-endpoint (pod IP) profile.

The profile only takes over routing when it has routes or overrides *and* a
``fully_qualified_name`` (:attr:`Profile.overrides_policy`); otherwise the outbound policy
decides. A malformed profile raises :class:`ProfileError` so the watcher keeps the last
good one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gossamer_api.addresses import AddressError
from gossamer_common.linear_regex import LinearRegex, RegexError, compile_linear

from gossamer_proxy.mesh.classify import Classification, classify_for_metrics
from gossamer_proxy.mesh.endpoints import Endpoint, endpoint_from_proto
from gossamer_proxy.mesh.request import RequestView
from gossamer_proxy.mesh.retry_budget import RetryBudgetConfig
from gossamer_proxy.mesh.routes import RouteError, method_from_proto
from gossamer_proxy.mesh.split import WeightedSplit

if TYPE_CHECKING:  # protobuf loads with the control-plane client, not with this module
    from gossamer_api.proxy import destination_pb2

__all__ = [
    "Profile",
    "ProfileError",
    "ProfileRoute",
    "RequestMatch",
    "ResponseMatch",
    "compile_profile",
    "service_authority",
]

MAX_MATCH_DEPTH = 32


class ProfileError(ValueError):
    """A ``DestinationProfile`` cannot be used."""


@dataclass(frozen=True, slots=True)
class RequestMatch:
    """One node of a ServiceProfile request condition."""

    kind: str  # "all" | "any" | "not" | "path" | "method"
    children: tuple[RequestMatch, ...] = ()
    path: LinearRegex[str] | None = None
    method: str | None = None

    def matches(self, request: RequestView) -> bool:
        if self.kind == "all":
            return all(c.matches(request) for c in self.children)
        if self.kind == "any":
            return any(c.matches(request) for c in self.children)
        if self.kind == "not":
            return not self.children[0].matches(request)
        if self.kind == "path":
            assert self.path is not None
            return self.path.fullmatch(request.path) is not None
        return request.method == self.method


@dataclass(frozen=True, slots=True)
class ResponseMatch:
    kind: str  # "all" | "any" | "not" | "status"
    children: tuple[ResponseMatch, ...] = ()
    low: int = 0
    high: int = 0

    def matches(self, status: int) -> bool:
        if self.kind == "all":
            return all(c.matches(status) for c in self.children)
        if self.kind == "any":
            return any(c.matches(status) for c in self.children)
        if self.kind == "not":
            return not self.children[0].matches(status)
        return self.low <= status <= self.high


def _request_match(message: destination_pb2.RequestMatch, depth: int = 0) -> RequestMatch:
    if depth > MAX_MATCH_DEPTH:
        raise ProfileError(f"request match nested deeper than {MAX_MATCH_DEPTH}")
    kind = message.WhichOneof("match")
    if kind in ("all", "any"):
        seq = message.all if kind == "all" else message.any
        return RequestMatch(kind, tuple(_request_match(m, depth + 1) for m in seq.matches))
    if kind == "not":
        return RequestMatch("not", (_request_match(getattr(message, "not"), depth + 1),))
    if kind == "path":
        try:
            return RequestMatch("path", path=compile_linear(message.path.regex))
        except RegexError as exc:
            raise ProfileError(f"invalid path regex {message.path.regex!r}: {exc}") from None
    if kind == "method":
        try:
            return RequestMatch("method", method=method_from_proto(message.method))
        except RouteError as exc:
            raise ProfileError(str(exc)) from None
    raise ProfileError("RequestMatch has no condition set")


def _response_match(message: destination_pb2.ResponseMatch, depth: int = 0) -> ResponseMatch:
    if depth > MAX_MATCH_DEPTH:
        raise ProfileError(f"response match nested deeper than {MAX_MATCH_DEPTH}")
    kind = message.WhichOneof("match")
    if kind in ("all", "any"):
        seq = message.all if kind == "all" else message.any
        return ResponseMatch(kind, tuple(_response_match(m, depth + 1) for m in seq.matches))
    if kind == "not":
        return ResponseMatch("not", (_response_match(getattr(message, "not"), depth + 1),))
    if kind == "status":
        low, high = message.status.min, message.status.max
        # A missing bound makes the range a single status.
        low, high = (low or high), (high or low)
        if not 100 <= low <= high <= 599:
            raise ProfileError(f"invalid status range {message.status.min}..{message.status.max}")
        return ResponseMatch("status", low=low, high=high)
    raise ProfileError("ResponseMatch has no condition set")


@dataclass(frozen=True, slots=True)
class ProfileRoute:
    condition: RequestMatch
    response_classes: tuple[tuple[ResponseMatch, bool], ...]
    labels: tuple[tuple[str, str], ...]
    retryable: bool
    timeout: float | None

    @property
    def metric_labels(self) -> dict[str, str]:
        """``rt_<label>`` as on ``route_*`` metrics."""
        return {f"rt_{k}": v for k, v in self.labels}

    def classify(
        self, status: int | None, *, grpc: int | None = None, error: bool = False
    ) -> Classification:
        if error or status is None:
            return Classification.FAILURE
        for condition, is_failure in self.response_classes:
            if condition.matches(status):
                return Classification.FAILURE if is_failure else Classification.SUCCESS
        return classify_for_metrics(status, grpc=grpc)


@dataclass(frozen=True, slots=True)
class Profile:
    fully_qualified_name: str
    routes: tuple[ProfileRoute, ...]
    retry_budget: RetryBudgetConfig | None
    dst_overrides: WeightedSplit[str]
    opaque_protocol: bool
    endpoint: Endpoint | None

    @property
    def overrides_policy(self) -> bool:
        return bool(self.fully_qualified_name) and (
            bool(self.routes) or len(self.dst_overrides) > 0
        )

    def route_for(self, request: RequestView) -> ProfileRoute | None:
        for route in self.routes:
            if route.condition.matches(request):
                return route
        return None

    def may_retry(self, route: ProfileRoute | None) -> bool:
        return route is not None and route.retryable and self.retry_budget is not None


def _duration(seconds: int, nanos: int) -> float:
    return seconds + nanos / 1e9


def _route(message: destination_pb2.Route) -> ProfileRoute:
    if not message.HasField("condition"):
        raise ProfileError("route has no condition")
    timeout = None
    if message.HasField("timeout"):
        timeout = _duration(message.timeout.seconds, message.timeout.nanos)
        if timeout <= 0:
            timeout = None
    classes = tuple(
        (_response_match(c.condition), c.is_failure)
        for c in message.response_classes
        if c.HasField("condition")
    )
    return ProfileRoute(
        condition=_request_match(message.condition),
        response_classes=classes,
        labels=tuple(sorted(message.metrics_labels.items())),
        retryable=message.is_retryable,
        timeout=timeout,
    )


def _overrides(messages: Sequence[destination_pb2.WeightedDst]) -> WeightedSplit[str]:
    for dst in messages:
        if not dst.authority:
            raise ProfileError("dst_override has an empty authority")
    return WeightedSplit((dst.authority, dst.weight) for dst in messages)


def compile_profile(message: destination_pb2.DestinationProfile) -> Profile:
    """Turn a ``DestinationProfile`` into a :class:`Profile` (raises :class:`ProfileError`)."""
    budget = None
    if message.HasField("retry_budget"):
        rb = message.retry_budget
        try:
            budget = RetryBudgetConfig(
                retry_ratio=rb.retry_ratio,
                min_retries_per_second=rb.min_retries_per_second,
                ttl=_duration(rb.ttl.seconds, rb.ttl.nanos) or 10.0,
            )
        except ValueError as exc:
            raise ProfileError(f"invalid retry budget: {exc}") from None
    endpoint = None
    if message.HasField("endpoint"):
        try:
            endpoint = endpoint_from_proto(message.endpoint)
        except AddressError as exc:
            raise ProfileError(f"invalid profile endpoint: {exc}") from None
    return Profile(
        fully_qualified_name=message.fully_qualified_name.rstrip("."),
        routes=tuple(_route(r) for r in message.routes),
        retry_budget=budget,
        dst_overrides=_overrides(message.dst_overrides),
        opaque_protocol=message.opaque_protocol,
        endpoint=endpoint,
    )


def service_authority(profile: Profile | None, port: int) -> str | None:
    """``<fqn>:<port>`` to pass to ``Get`` for a profile that names a service, else ``None``."""
    if profile is None or not profile.fully_qualified_name or profile.endpoint is not None:
        return None
    return f"{profile.fully_qualified_name}:{port}"
