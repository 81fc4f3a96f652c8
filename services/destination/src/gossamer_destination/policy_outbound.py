"""Outbound policy for a service port: the ``OutboundPolicy`` a client proxy routes with (pure).

Follows Linkerd's policy controller defaults (linkerd-wire.md §3.3): a Service port gets
protocol detection with one default route per protocol balancing over the service's own
endpoints, unless routes attached to the Service say otherwise, or the port is opaque.
Routes decide the protocol as in Linkerd: GRPCRoutes make it ``grpc``, HTTPRoutes keep
detection, else TLSRoutes make it ``tls`` (routed by SNI) and a TCPRoute ``opaque``
(:mod:`.tcp_routes`); an opaque port may still carry a TCPRoute. A port the Service does not
define is forbidden (``undefined-port``); an address outside the cluster networks gets the
``egress-fallback`` forward policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gossamer_api.proxy import (
    destination_pb2,
    grpc_route_pb2,
    http_route_pb2,
    meta_pb2,
    opaque_route_pb2,
    outbound_pb2,
)

from gossamer_destination import httproutes, route_tuning, tcp_routes
from gossamer_destination.endpoints import annotations_of, meta
from gossamer_destination.policy_inbound import PolicyLookups
from gossamer_destination.profiles import Issues, service_opaque
from gossamer_destination.settings import DestinationSettings
from gossamer_destination.units import parse_duration
from gossamer_destination.wire import tcp_address

KubeObject = dict[str, Any]
DETECT_TIMEOUT_SECONDS = 10
QUEUE_CAPACITY = 100
FAILFAST_SECONDS = 3
EWMA_DEFAULT_RTT_MS = 30
EWMA_DECAY_SECONDS = 10
OPAQUE_APP_PROTOCOLS = ("linkerd.io/opaque", "linkerd.io/tcp")


def _duration(seconds: float) -> Any:
    from google.protobuf.duration_pb2 import Duration

    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def _queue() -> outbound_pb2.Queue:
    return outbound_pb2.Queue(capacity=QUEUE_CAPACITY, failfast_timeout=_duration(FAILFAST_SECONDS))


def service_resource(name: str, namespace: str, port: int) -> meta_pb2.Metadata:
    return meta_pb2.Metadata(
        resource=meta_pb2.Resource(
            group="core", kind="Service", name=name, namespace=namespace, port=port
        )
    )


def balancer_backend(
    name: str, namespace: str, port: int, settings: DestinationSettings
) -> outbound_pb2.Backend:
    backend = outbound_pb2.Backend(metadata=service_resource(name, namespace, port), queue=_queue())
    backend.balancer.discovery.dst.path = f"{name}.{namespace}.svc.{settings.cluster_domain}:{port}"
    backend.balancer.peak_ewma.default_rtt.CopyFrom(_duration(EWMA_DEFAULT_RTT_MS / 1000))
    backend.balancer.peak_ewma.decay.CopyFrom(_duration(EWMA_DECAY_SECONDS))
    return backend


_ACCRUAL = "balancer.linkerd.io/failure-accrual"
_CONSECUTIVE = "balancer.linkerd.io/failure-accrual-consecutive-"
_SUCCESS_RATE = "balancer.alpha.linkerd.io/failure-accrual-success-rate-"
#: Defaults for the alpha success-rate annotations of ``unified`` accrual (Gossamer's own:
#: eject an endpoint whose success rate over about 30 s falls below 80%, once 20 responses
#: were seen).
SUCCESS_RATE_THRESHOLD = 0.8
SUCCESS_RATE_WINDOW = "30s"
SUCCESS_RATE_MIN_REQUESTS = 20


def _failure_accrual(
    service: Mapping[str, Any], issues: Issues
) -> outbound_pb2.FailureAccrual | None:
    """The Service's ``balancer.linkerd.io/failure-accrual`` (``consecutive`` or ``unified``).

    A malformed setting is reported in ``issues`` and leaves the Service without accrual,
    rather than half-configured.
    """
    annotations = annotations_of(service)
    kind = annotations.get(_ACCRUAL)
    if kind is None:
        return None
    m = meta(service)
    where = f"Service {m.get('namespace')}/{m.get('name')}"
    if kind not in ("consecutive", "unified"):
        issues.add(f"{where}: {_ACCRUAL}={kind!r} is not consecutive or unified; ignored")
        return None
    try:
        max_failures = int(annotations.get(_CONSECUTIVE + "max-failures", "7"))
        min_penalty = parse_duration(annotations.get(_CONSECUTIVE + "min-penalty", "1s"))
        max_penalty = parse_duration(annotations.get(_CONSECUTIVE + "max-penalty", "60s"))
        jitter = float(annotations.get(_CONSECUTIVE + "jitter-ratio", "0.5"))
        threshold = float(annotations.get(_SUCCESS_RATE + "threshold", str(SUCCESS_RATE_THRESHOLD)))
        window = parse_duration(annotations.get(_SUCCESS_RATE + "window", SUCCESS_RATE_WINDOW))
        min_requests = int(
            annotations.get(_SUCCESS_RATE + "min-requests", str(SUCCESS_RATE_MIN_REQUESTS))
        )
        if max_failures < 0 or min_requests < 0 or not 0.0 <= threshold <= 1.0:
            raise ValueError("counts must not be negative and the threshold is within [0, 1]")
        if min_penalty > max_penalty or window <= 0 or jitter < 0:
            raise ValueError("min-penalty <= max-penalty, a positive window and jitter >= 0")
    except ValueError as exc:
        issues.add(f"{where}: invalid failure-accrual annotations ({exc}); accrual disabled")
        return None
    fa = outbound_pb2.FailureAccrual()
    if kind == "consecutive":
        fa.consecutive_failures.max_failures = max_failures
        backoff = fa.consecutive_failures.backoff
    else:
        fa.unified.success_rate_threshold = threshold
        fa.unified.decay.CopyFrom(_duration(window))
        fa.unified.min_requests = min_requests
        fa.unified.max_consecutive_failures = max_failures
        backoff = fa.unified.backoff
    backoff.min_backoff.CopyFrom(_duration(min_penalty))
    backoff.max_backoff.CopyFrom(_duration(max_penalty))
    backoff.jitter_ratio = jitter
    return fa


def _default_http_route(
    backend: outbound_pb2.Backend,
    tuning: route_tuning.Tuning,
    settings: DestinationSettings,
) -> outbound_pb2.HttpRoute:
    """The route of a Service without HTTPRoutes; the Service's annotations tune it."""
    route = outbound_pb2.HttpRoute()
    route.metadata.default = "http"
    rule = route.rules.add()
    rule.matches.append(http_route_pb2.HttpRouteMatch(path=http_route_pb2.PathMatch(prefix="/")))
    rule.backends.first_available.backends.add().backend.CopyFrom(backend)
    _tune_rule(rule, {}, None, tuning)
    rule.allow_l5d_request_headers = settings.allow_l5d_request_headers
    return route


def _opaque_route(backend: outbound_pb2.Backend) -> outbound_pb2.OpaqueRoute:
    route = outbound_pb2.OpaqueRoute()
    route.metadata.default = "opaq"
    rule = route.rules.add()
    rule.backends.first_available.backends.add().backend.CopyFrom(backend)
    return route


def _service_port(service: Mapping[str, Any], port: int) -> Mapping[str, Any] | None:
    for sp in (service.get("spec") or {}).get("ports") or ():
        if sp.get("port") == port:
            return sp  # type: ignore[no-any-return]
    return None


def undefined_port(name: str, namespace: str, port: int) -> outbound_pb2.OutboundPolicy:
    policy = outbound_pb2.OutboundPolicy()
    policy.metadata.default = "undefined-port"
    route = policy.protocol.opaque.routes.add()
    route.metadata.default = "undefined-port"
    rule = route.rules.add()
    rule.backends.empty.SetInParent()
    rule.filters.add().forbidden.CopyFrom(opaque_route_pb2.Forbidden())
    return policy


def egress_fallback(ip: str, port: int) -> outbound_pb2.OutboundPolicy:
    forward = outbound_pb2.Backend(queue=_queue())
    forward.metadata.default = "egress-fallback"
    forward.forward.CopyFrom(destination_pb2.WeightedAddr(addr=tcp_address((ip, port)), weight=1))
    policy = outbound_pb2.OutboundPolicy()
    policy.metadata.default = "egress-fallback"
    detect = policy.protocol.detect
    detect.timeout.CopyFrom(_duration(DETECT_TIMEOUT_SECONDS))
    op = detect.opaque.routes.add()
    op.metadata.default = "egress-fallback"
    op.rules.add().backends.first_available.backends.add().backend.CopyFrom(forward)
    for http in (detect.http1, detect.http2):
        r = http.routes.add()
        r.metadata.default = "egress-fallback"
        rule = r.rules.add()
        rule.matches.append(
            http_route_pb2.HttpRouteMatch(path=http_route_pb2.PathMatch(prefix="/"))
        )
        rule.backends.first_available.backends.add().backend.CopyFrom(forward)
    return policy


def _route_backends(
    rule: Mapping[str, Any],
    namespace: str,
    default: outbound_pb2.Backend,
    service_exists: Any,
    settings: DestinationSettings,
    route_type: Any,
) -> Any:
    """A rule's ``backendRefs`` as the route type's ``Distribution``: the parent Service when
    there are none, else a weighted split. A backend Service that does not exist stays in
    the split and fails its share of requests (as Linkerd does), so weights keep meaning."""
    dist = route_type.Distribution()
    refs = rule.get("backendRefs") or []
    if not refs:
        dist.first_available.backends.add().backend.CopyFrom(default)
        return dist
    grpc = route_type is outbound_pb2.GrpcRoute
    for ref in refs:
        kind = ref.get("kind") or "Service"
        if kind != "Service" or (ref.get("group") or "core") not in ("core", ""):
            raise httproutes.InvalidRouteError(f"unsupported backendRef kind {kind!r}")
        name = str(ref.get("name") or "")
        ns = str(ref.get("namespace") or namespace)
        port = int(ref.get("port") or 0)
        weight = int(ref.get("weight", 1))
        if not name or not 0 < port < 65536 or not 0 <= weight <= 1_000_000:
            raise httproutes.InvalidRouteError(
                f"backendRef {name!r} needs a name, a port and a weight in [0, 1000000]"
            )
        wrb = dist.random_available.backends.add()
        wrb.weight = weight
        wrb.backend.backend.CopyFrom(balancer_backend(name, ns, port, settings))
        for f in ref.get("filters") or ():
            wrb.backend.filters.append(_filter(f, route_type))
        if not service_exists(ns, name):
            message = f"Service not found {name}"
            ratio = http_route_pb2.Ratio(numerator=1, denominator=1)
            if grpc:
                wrb.backend.filters.add().failure_injector.CopyFrom(
                    grpc_route_pb2.GrpcFailureInjector(code=14, message=message, ratio=ratio)
                )
            else:
                wrb.backend.filters.add().failure_injector.CopyFrom(
                    http_route_pb2.HttpFailureInjector(status=500, message=message, ratio=ratio)
                )
    return dist


def _filter(f: Mapping[str, Any], route_type: Any) -> Any:
    kind = f.get("type")
    out = route_type.Filter()
    if kind == "RequestHeaderModifier":
        out.request_header_modifier.CopyFrom(
            httproutes.header_modifier(f.get("requestHeaderModifier") or {})
        )
    elif kind == "ResponseHeaderModifier" and route_type is outbound_pb2.HttpRoute:
        out.response_header_modifier.CopyFrom(
            httproutes.response_header_modifier(f.get("responseHeaderModifier") or {})
        )
    elif kind == "RequestRedirect" and route_type is outbound_pb2.HttpRoute:
        out.redirect.CopyFrom(httproutes.redirect(f.get("requestRedirect") or {}))
    else:
        raise httproutes.InvalidRouteError(f"unsupported filter {kind!r}")
    return out


def _route_metadata(route: Mapping[str, Any]) -> meta_pb2.Metadata:
    rm = meta(route)
    return meta_pb2.Metadata(
        resource=meta_pb2.Resource(
            group=httproutes.route_group(route),
            kind=httproutes.route_kind(route),
            name=str(rm.get("name")),
            namespace=str(rm.get("namespace")),
        )
    )


def _tune_rule(
    r: Any, rule: Mapping[str, Any], route: Mapping[str, Any] | None, tuning: route_tuning.Tuning
) -> None:
    annotated = route is not None and route_tuning.has_timeout_annotations(route)
    timeouts = route_tuning.timeouts_proto(route_tuning.rule_timeouts(tuning, rule, annotated))
    if timeouts is not None:
        r.timeouts.CopyFrom(timeouts)
    if tuning.retry is not None:
        if isinstance(r, outbound_pb2.GrpcRoute.Rule):
            r.retry.CopyFrom(route_tuning.grpc_retry_proto(tuning.retry))
        else:
            r.retry.CopyFrom(route_tuning.http_retry_proto(tuning.retry))


def outbound_route(
    route: Mapping[str, Any],
    default: outbound_pb2.Backend,
    service_exists: Any,
    settings: DestinationSettings,
    tuning: route_tuning.Tuning = route_tuning.NO_TUNING,
) -> outbound_pb2.HttpRoute:
    """An HTTPRoute (``policy.linkerd.io`` or Gateway API) attached to a Service."""
    out = outbound_pb2.HttpRoute(metadata=_route_metadata(route))
    _add_rules(out, route, httproutes.rule_matches, default, service_exists, settings, tuning)
    return out


def outbound_grpc_route(
    route: Mapping[str, Any],
    default: outbound_pb2.Backend,
    service_exists: Any,
    settings: DestinationSettings,
    tuning: route_tuning.Tuning = route_tuning.NO_TUNING,
) -> outbound_pb2.GrpcRoute:
    """A Gateway API GRPCRoute attached to a Service: RPC matches, gRPC-status retries."""
    out = outbound_pb2.GrpcRoute(metadata=_route_metadata(route))
    _add_rules(out, route, httproutes.grpc_rule_matches, default, service_exists, settings, tuning)
    return out


def _add_rules(
    out: Any,
    route: Mapping[str, Any],
    rule_matches: Any,
    default: outbound_pb2.Backend,
    service_exists: Any,
    settings: DestinationSettings,
    tuning: route_tuning.Tuning,
) -> None:
    """Hosts and rules of an HTTP or gRPC route; ``out``'s type picks the proto messages."""
    kind = type(out)
    ns = str(meta(route).get("namespace"))
    spec = route.get("spec") or {}
    out.hosts.extend(httproutes.host_match(str(h)) for h in spec.get("hostnames") or ())
    for rule in spec.get("rules") or [{}]:
        r = out.rules.add()
        r.matches.extend(rule_matches(rule))
        r.filters.extend(_filter(f, kind) for f in rule.get("filters") or ())
        r.backends.CopyFrom(_route_backends(rule, ns, default, service_exists, settings, kind))
        _tune_rule(r, rule, route, tuning)
        r.allow_l5d_request_headers = settings.allow_l5d_request_headers


_ROUTE_ERRORS = (httproutes.InvalidRouteError, ValueError, TypeError, AttributeError)


def attached_routes(
    routes: Iterable[Mapping[str, Any]], name: str, ns: str, port: int
) -> list[Mapping[str, Any]]:
    """The routes whose parentRefs name this Service port, oldest first."""
    return sorted(
        (r for r in routes if httproutes.attaches_to_service(r, ns, name, port)),
        key=httproutes.route_sort_key,
    )


def service_policy(
    service: Mapping[str, Any],
    port: int,
    lookups: PolicyLookups,
    service_exists: Any,
    settings: DestinationSettings,
    issues: Issues,
) -> outbound_pb2.OutboundPolicy:
    m = meta(service)
    name, ns = str(m.get("name")), str(m.get("namespace"))
    sp = _service_port(service, port)
    if sp is None:
        return undefined_port(name, ns, port)
    backend = balancer_backend(name, ns, port, settings)
    policy = outbound_pb2.OutboundPolicy(metadata=service_resource(name, ns, port))
    app = sp.get("appProtocol")

    def resolve(ref: Mapping[str, Any], route_ns: str) -> tcp_routes.ResolvedRef:
        return tcp_routes.service_ref(
            ref,
            route_ns,
            service_exists,
            lambda n, n_ns, p: balancer_backend(n, n_ns, p, settings),
            service_resource,
        )

    tcp = _oldest_valid(
        attached_routes(lookups.tcp_routes(ns), name, ns, port), "TCPRoute", resolve, issues
    )
    if app in OPAQUE_APP_PROTOCOLS or service_opaque(service, port, settings):
        policy.protocol.opaque.routes.append(tcp or _opaque_route(backend))
        return policy
    service_tune = route_tuning.service_tuning(service, issues)
    routes: list[outbound_pb2.HttpRoute] = []
    for route in attached_routes(lookups.http_routes(ns), name, ns, port):
        tuning = route_tuning.route_tuning(route, "HTTPRoute", service_tune, issues)
        try:
            routes.append(outbound_route(route, backend, service_exists, settings, tuning))
        except _ROUTE_ERRORS as exc:
            issues.add(f"HTTPRoute {ns}/{meta(route).get('name')} skipped: {exc}")
    grpc_routes: list[outbound_pb2.GrpcRoute] = []
    for route in attached_routes(lookups.grpc_routes(ns), name, ns, port):
        tuning = route_tuning.route_tuning(route, "GRPCRoute", service_tune, issues)
        try:
            grpc_routes.append(
                outbound_grpc_route(route, backend, service_exists, settings, tuning)
            )
        except _ROUTE_ERRORS as exc:
            issues.add(f"GRPCRoute {ns}/{meta(route).get('name')} skipped: {exc}")
    accrual = _failure_accrual(service, issues)
    if grpc_routes and app != "http":
        if routes:
            issues.add(
                f"Service {ns}/{name} port {port}: has both HTTPRoutes and GRPCRoutes; "
                "the GRPCRoutes apply"
            )
        policy.protocol.grpc.routes.extend(grpc_routes)
        if accrual:
            policy.protocol.grpc.failure_accrual.CopyFrom(accrual)
        return policy
    tls = [
        r
        for r in (
            _valid(route, "TLSRoute", resolve, issues)
            for route in attached_routes(lookups.tls_routes(ns), name, ns, port)
        )
        if r is not None
    ]
    if (tls or tcp) and (routes or app in ("http", "kubernetes.io/h2c")):
        issues.add(
            f"Service {ns}/{name} port {port}: is HTTP (HTTPRoutes or its appProtocol); "
            "its TLSRoutes and TCPRoutes do not apply"
        )
    elif tls:
        if tcp:
            issues.add(
                f"Service {ns}/{name} port {port}: has both TLSRoutes and TCPRoutes; "
                "the TLSRoutes apply"
            )
        policy.protocol.tls.routes.extend(tls)
        return policy
    elif tcp:
        policy.protocol.opaque.routes.append(tcp)
        return policy
    if not routes:
        routes = [_default_http_route(backend, service_tune, settings)]
    if app == "http":
        policy.protocol.http1.routes.extend(routes)
        if accrual:
            policy.protocol.http1.failure_accrual.CopyFrom(accrual)
        return policy
    if app == "kubernetes.io/h2c":
        policy.protocol.http2.routes.extend(routes)
        if accrual:
            policy.protocol.http2.failure_accrual.CopyFrom(accrual)
        return policy
    detect = policy.protocol.detect
    detect.timeout.CopyFrom(_duration(DETECT_TIMEOUT_SECONDS))
    detect.opaque.routes.append(_opaque_route(backend))
    detect.http1.routes.extend(routes)
    detect.http2.routes.extend(routes)
    if accrual:
        detect.http1.failure_accrual.CopyFrom(accrual)
        detect.http2.failure_accrual.CopyFrom(accrual)
    return policy


def _valid(route: Mapping[str, Any], kind: str, resolve: tcp_routes.Resolve, issues: Issues) -> Any:
    """A TLSRoute or TCPRoute as its proto message, or ``None`` (reported) if unusable."""
    build = tcp_routes.tls_route if kind == "TLSRoute" else tcp_routes.opaque_route
    try:
        return build(route, resolve)
    except _ROUTE_ERRORS as exc:
        m = meta(route)
        issues.add(f"{kind} {m.get('namespace')}/{m.get('name')} skipped: {exc}")
        return None


def _oldest_valid(
    routes: Iterable[Mapping[str, Any]], kind: str, resolve: tcp_routes.Resolve, issues: Issues
) -> outbound_pb2.OpaqueRoute | None:
    """The oldest usable TCPRoute: a port's opaque traffic follows one route (no matches
    choose between several, so the younger ones are reported and left out)."""
    chosen: outbound_pb2.OpaqueRoute | None = None
    for route in routes:
        if chosen is not None:
            m = meta(route)
            issues.add(
                f"{kind} {m.get('namespace')}/{m.get('name')} not applied: an older {kind} "
                "carries the same port"
            )
            continue
        chosen = _valid(route, kind, resolve, issues)
    return chosen
