"""The outbound_{http,grpc}_route_* series: labels as Linkerd's, resolved once per route."""

from __future__ import annotations

from gossamer_common.metrics import Registry
from gossamer_proxy.build_info import register_build_info
from gossamer_proxy.errors import ProxyErrorKind
from gossamer_proxy.mesh.authz import MetaLabels
from gossamer_proxy.mesh.outbound_policy import BackendSpec, RouteAction
from gossamer_proxy.mesh.split import WeightedSplit
from gossamer_proxy.outbound.policy_route_metrics import (
    MAX_HOSTNAMES,
    PolicyRouteMetrics,
    error_label,
    grpc_status_name,
    record_end,
    service_meta,
)

PARENT = MetaLabels("core", "Service", "web", "emojivoto", "", 80)
BACKEND = BackendSpec(MetaLabels("core", "Service", "web-v2", "emojivoto", "", 8080))


def _action(name: str) -> RouteAction:
    meta = MetaLabels("gateway.networking.k8s.io", "GRPCRoute", name, "emojivoto")
    return RouteAction(meta, "random_available", WeightedSplit(((BACKEND, 1),)))


def _lines(registry: Registry, name: str) -> list[str]:
    return [line for line in registry.render().decode().splitlines() if line.startswith(name + "{")]


def test_series_are_resolved_once_per_route_and_host() -> None:
    metrics = PolicyRouteMetrics(Registry())
    action = _action("vote")
    first = metrics.route(PARENT, action, b"web.emojivoto.svc.cluster.local:80", grpc=True)
    assert metrics.route(PARENT, action, b"web.emojivoto.svc.cluster.local:80", grpc=True) is first
    assert first.backend(BACKEND) is first.backend(BACKEND)
    other = metrics.route(PARENT, _action("vote"), b"web.emojivoto.svc.cluster.local:80")
    assert other is not first  # another policy's action, though equal in value


def test_grpc_labels_and_exposition() -> None:
    registry = Registry()
    metrics = PolicyRouteMetrics(registry)
    route = metrics.route(PARENT, _action("vote"), b"web.emojivoto.svc.cluster.local", grpc=True)
    backend = route.backend(BACKEND)
    backend.requests.value += 1
    record_end(route, backend, 200, 5, "", 0.02)
    record_end(route, backend, 0, None, error_label(ProxyErrorKind.FAIL_FAST), 3.0)
    (ok, failed) = sorted(_lines(registry, "outbound_grpc_route_request_statuses_total"))
    assert ok == (
        'outbound_grpc_route_request_statuses_total{parent_group="core",parent_kind="Service",'
        'parent_namespace="emojivoto",parent_name="web",parent_port="80",'
        'route_group="gateway.networking.k8s.io",route_kind="GRPCRoute",'
        'route_namespace="emojivoto",route_name="vote",hostname="web.emojivoto.svc.cluster.local",'
        'grpc_status="NOT_FOUND"} 1'
    )
    assert 'grpc_status="UNKNOWN",error="FAIL_FAST"} 1' in failed
    (requests,) = _lines(registry, "outbound_grpc_route_backend_requests_total")
    assert 'backend_name="web-v2",backend_port="8080"} 1' in requests
    buckets = _lines(registry, "outbound_grpc_route_request_duration_seconds_bucket")
    assert [line.split('le="')[1].split('"')[0] for line in buckets] == [
        "0.05", "0.5", "1", "10", "+Inf",
    ]  # fmt: skip
    assert not _lines(registry, "outbound_http_route_request_statuses_total")


def test_hostnames_are_dns_names_and_bounded() -> None:
    registry = Registry()
    metrics = PolicyRouteMetrics(registry)
    action = _action("r")
    for host in (b"10.0.0.1:80", b"[::1]:80", b"bad host", b""):
        record_end(metrics.route(PARENT, action, host), None, 200, None, "", 0.1)
    assert all(
        "hostname" not in line
        for line in _lines(registry, "outbound_http_route_request_statuses_total")
    )
    for i in range(MAX_HOSTNAMES * 2):
        record_end(metrics.route(PARENT, action, b"h%d.example" % i), None, 200, None, "", 0.1)
    hosts = {
        line.split('hostname="')[1].split('"')[0]
        for line in _lines(registry, "outbound_http_route_request_statuses_total")
        if 'hostname="' in line
    }
    assert len(hosts) < MAX_HOSTNAMES


def test_grpc_status_names_and_service_meta() -> None:
    assert grpc_status_name(0) == "OK"
    assert grpc_status_name(16) == "UNAUTHENTICATED"
    assert grpc_status_name(99) == grpc_status_name(None) == "UNKNOWN"
    assert service_meta("web.emojivoto.svc.cluster.local:80") == PARENT
    assert service_meta("10.0.0.1:80") is None


def test_build_info_has_linkerds_labels() -> None:
    registry = Registry()
    register_build_info(registry, {"GOSSAMER_BUILD_REVISION": "abc123"})
    (line,) = [
        x for x in registry.render().decode().splitlines() if x.startswith("proxy_build_info")
    ]
    assert line.startswith('proxy_build_info{date="unknown",git_sha="abc123",profile="release",')
    assert 'vendor="gossamer",version="' in line
    assert line.endswith("} 1")
