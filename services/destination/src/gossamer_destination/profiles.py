"""ServiceProfile CRs (and their absence) to ``DestinationProfile`` messages (pure).

Invalid parts of a profile (a route whose regex does not compile, an unknown condition) are
left out and reported through the returned issue list; the rest of the profile still goes
out, so one typo never takes a service's routing down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gossamer_api.proxy import destination_pb2, http_types_pb2, meta_pb2
from gossamer_common.linear_regex import RegexError, compile_linear

from gossamer_destination.endpoints import Endpoint, annotations_of, meta
from gossamer_destination.ports import OPAQUE_PORTS_ANNOTATION_SERVICE, PortSet, lenient_port_set
from gossamer_destination.settings import DestinationSettings
from gossamer_destination.units import InvalidValueError, parse_duration, parse_quantity
from gossamer_destination.wire import weighted_addr

DEFAULT_RETRY_RATIO = 0.2
DEFAULT_MIN_RETRIES_PER_SECOND = 10
DEFAULT_RETRY_TTL_SECONDS = 10
WEIGHT_SCALE = 10000


class InvalidProfileError(ValueError):
    """One part of a ServiceProfile cannot be translated."""


@dataclass
class Issues:
    """Problems found while translating; the caller logs them and counts them in a metric."""

    messages: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.messages.append(message)


def default_retry_budget() -> destination_pb2.RetryBudget:
    budget = destination_pb2.RetryBudget(
        retry_ratio=DEFAULT_RETRY_RATIO, min_retries_per_second=DEFAULT_MIN_RETRIES_PER_SECOND
    )
    budget.ttl.seconds = DEFAULT_RETRY_TTL_SECONDS
    return budget


def profile_name(service: str, namespace: str, cluster_domain: str) -> str:
    return f"{service}.{namespace}.svc.{cluster_domain}"


def service_profile(
    service: Mapping[str, Any],
    port: int,
    profile: Mapping[str, Any] | None,
    settings: DestinationSettings,
    issues: Issues,
) -> destination_pb2.DestinationProfile:
    """The profile for ``service:port``; ``profile`` is the ServiceProfile CR, if any."""
    m = meta(service)
    name, namespace = str(m.get("name")), str(m.get("namespace"))
    out = destination_pb2.DestinationProfile(
        fully_qualified_name=profile_name(name, namespace, settings.cluster_domain),
        opaque_protocol=service_opaque(service, port, settings),
        parent_ref=meta_pb2.Metadata(
            resource=meta_pb2.Resource(
                group="core", kind="Service", name=name, namespace=namespace, port=port
            )
        ),
    )
    out.retry_budget.CopyFrom(default_retry_budget())
    if profile is None:
        out.profile_ref.resource.CopyFrom(meta_pb2.Resource(group="linkerd.io"))
        return out
    pm = meta(profile)
    out.profile_ref.resource.CopyFrom(
        meta_pb2.Resource(
            group="linkerd.io",
            kind="ServiceProfile",
            name=str(pm.get("name")),
            namespace=str(pm.get("namespace")),
        )
    )
    where = f"ServiceProfile {pm.get('namespace')}/{pm.get('name')}"
    spec = profile.get("spec") or {}
    for i, route in enumerate(spec.get("routes") or ()):
        try:
            out.routes.append(profile_route(route))
        except (InvalidProfileError, InvalidValueError) as exc:
            issues.add(f"{where}: route {i} ({route.get('name', '?')}) skipped: {exc}")
    budget = spec.get("retryBudget")
    if budget:
        try:
            out.retry_budget.CopyFrom(retry_budget(budget))
        except (InvalidProfileError, InvalidValueError) as exc:
            issues.add(f"{where}: retryBudget ignored: {exc}")
    for i, dst in enumerate(spec.get("dstOverrides") or ()):
        try:
            out.dst_overrides.append(weighted_dst(dst, port))
        except (InvalidProfileError, InvalidValueError) as exc:
            issues.add(f"{where}: dstOverrides[{i}] skipped: {exc}")
    return out


def service_opaque(service: Mapping[str, Any], port: int, settings: DestinationSettings) -> bool:
    ports: PortSet = lenient_port_set(
        annotations_of(service).get(OPAQUE_PORTS_ANNOTATION_SERVICE),
        settings.default_opaque_ports,
    )
    return ports.contains(port)


def endpoint_profile(
    endpoint: Endpoint, namespace: str | None, opaque: bool
) -> destination_pb2.DestinationProfile:
    """The reply for a pod IP (or unknown IP) lookup: one endpoint, no fqn."""
    extra = {"namespace": namespace} if namespace else {}
    out = destination_pb2.DestinationProfile(opaque_protocol=opaque)
    out.retry_budget.CopyFrom(default_retry_budget())
    out.endpoint.CopyFrom(weighted_addr(endpoint, extra_labels=extra))
    return out


def profile_route(route: Mapping[str, Any]) -> destination_pb2.Route:
    name = route.get("name")
    if not name:
        raise InvalidProfileError("route has no name")
    condition = route.get("condition")
    if not isinstance(condition, Mapping):
        raise InvalidProfileError("route has no condition")
    out = destination_pb2.Route(
        condition=request_match(condition), is_retryable=bool(route.get("isRetryable"))
    )
    out.metrics_labels["route"] = str(name)
    for rc in route.get("responseClasses") or ():
        cond = rc.get("condition")
        if not isinstance(cond, Mapping):
            raise InvalidProfileError("responseClass has no condition")
        out.response_classes.append(
            destination_pb2.ResponseClass(
                condition=response_match(cond), is_failure=bool(rc.get("isFailure"))
            )
        )
    timeout = route.get("timeout")
    if timeout:
        out.timeout.FromNanoseconds(round(parse_duration(timeout) * 1e9))
    return out


def request_match(cond: Mapping[str, Any]) -> destination_pb2.RequestMatch:
    parts: list[destination_pb2.RequestMatch] = []
    unknown = set(cond) - {"pathRegex", "method", "all", "any", "not"}
    if unknown:
        raise InvalidProfileError(f"unknown condition field(s) {sorted(unknown)}")
    if "pathRegex" in cond:
        regex = str(cond["pathRegex"])
        try:
            compile_linear(regex)
        except RegexError as exc:
            raise InvalidProfileError(f"invalid pathRegex {regex!r}: {exc}") from exc
        parts.append(destination_pb2.RequestMatch(path=destination_pb2.PathMatch(regex=regex)))
    if "method" in cond:
        parts.append(destination_pb2.RequestMatch(method=http_method(str(cond["method"]))))
    for key in ("all", "any"):
        if key in cond:
            seq = destination_pb2.RequestMatch.Seq(
                matches=[request_match(c) for c in cond[key] or ()]
            )
            m = destination_pb2.RequestMatch()
            getattr(m, key).CopyFrom(seq)
            parts.append(m)
    if "not" in cond:
        m = destination_pb2.RequestMatch()
        getattr(m, "not").CopyFrom(request_match(cond["not"]))
        parts.append(m)
    if not parts:
        raise InvalidProfileError("empty request condition")
    if len(parts) == 1:
        return parts[0]
    out = destination_pb2.RequestMatch()
    out.all.matches.extend(parts)
    return out


def response_match(cond: Mapping[str, Any]) -> destination_pb2.ResponseMatch:
    parts: list[destination_pb2.ResponseMatch] = []
    unknown = set(cond) - {"status", "all", "any", "not"}
    if unknown:
        raise InvalidProfileError(f"unknown response condition field(s) {sorted(unknown)}")
    if "status" in cond:
        status = cond["status"] or {}
        lo, hi = status.get("min"), status.get("max")
        if lo is None and hi is None:
            raise InvalidProfileError("status range has neither min nor max")
        lo = int(lo if lo is not None else hi)  # type: ignore[arg-type]
        hi = int(hi if hi is not None else lo)
        if not (100 <= lo <= hi <= 599):
            raise InvalidProfileError(f"invalid status range {lo}-{hi}")
        parts.append(
            destination_pb2.ResponseMatch(status=destination_pb2.HttpStatusRange(min=lo, max=hi))
        )
    for key in ("all", "any"):
        if key in cond:
            m = destination_pb2.ResponseMatch()
            getattr(m, key).matches.extend(response_match(c) for c in cond[key] or ())
            parts.append(m)
    if "not" in cond:
        m = destination_pb2.ResponseMatch()
        getattr(m, "not").CopyFrom(response_match(cond["not"]))
        parts.append(m)
    if not parts:
        raise InvalidProfileError("empty response condition")
    if len(parts) == 1:
        return parts[0]
    out = destination_pb2.ResponseMatch()
    out.all.matches.extend(parts)
    return out


def http_method(method: str) -> http_types_pb2.HttpMethod:
    upper = method.upper()
    if upper in http_types_pb2.HttpMethod.Registered.keys():  # noqa: SIM118 (enum wrapper)
        return http_types_pb2.HttpMethod(
            registered=http_types_pb2.HttpMethod.Registered.Value(upper)
        )
    return http_types_pb2.HttpMethod(unregistered=method)


def retry_budget(spec: Mapping[str, Any]) -> destination_pb2.RetryBudget:
    try:
        ratio = float(spec["retryRatio"])
        min_rps = int(spec["minRetriesPerSecond"])
        ttl = parse_duration(spec["ttl"])
    except KeyError as exc:
        raise InvalidProfileError(f"retryBudget lacks {exc.args[0]}") from exc
    except (TypeError, ValueError) as exc:
        raise InvalidProfileError(f"retryBudget: {exc}") from exc
    if ratio < 0 or min_rps < 0:
        raise InvalidProfileError("retryBudget values must not be negative")
    out = destination_pb2.RetryBudget(retry_ratio=ratio, min_retries_per_second=min_rps)
    out.ttl.FromNanoseconds(round(ttl * 1e9))
    return out


def weighted_dst(dst: Mapping[str, Any], port: int) -> destination_pb2.WeightedDst:
    authority = str(dst.get("authority") or "")
    if not authority:
        raise InvalidProfileError("dstOverride has no authority")
    host = authority.rsplit("]", 1)[-1]
    if ":" not in host:
        authority = f"{authority}:{port}"
    weight = parse_quantity(dst.get("weight", 0)) * WEIGHT_SCALE
    if weight < 0:
        raise InvalidProfileError("negative weight")
    return destination_pb2.WeightedDst(authority=authority, weight=int(weight))
