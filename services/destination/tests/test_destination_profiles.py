"""ServiceProfile translation, authority parsing, units and settings."""

from __future__ import annotations

from typing import Any

import pytest
from gossamer_destination import testing as t
from gossamer_destination.authority import (
    InvalidAuthorityError,
    IpAuthority,
    ServiceAuthority,
    parse_authority,
)
from gossamer_destination.context import (
    CallerContext,
    InvalidWorkloadError,
    Workload,
    parse_context_token,
    parse_workload,
)
from gossamer_destination.ports import InvalidPortSpecError, parse_port_set
from gossamer_destination.profiles import Issues, service_profile
from gossamer_destination.settings import DestinationSettings, SettingsError
from gossamer_destination.units import InvalidValueError, parse_duration, parse_quantity

SETTINGS = DestinationSettings()


def sp(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "ServiceProfile",
        "metadata": {"name": "web.ns.svc.cluster.local", "namespace": "ns"},
        "spec": spec,
    }


def test_default_profile_without_service_profile() -> None:
    out = service_profile(t.service("web"), 80, None, SETTINGS, Issues())
    assert out.fully_qualified_name == "web.ns.svc.cluster.local"
    assert not out.routes
    assert not out.dst_overrides
    assert out.retry_budget.retry_ratio == pytest.approx(0.2)
    assert out.retry_budget.min_retries_per_second == 10
    assert out.retry_budget.ttl.seconds == 10
    r = out.parent_ref.resource
    assert (r.group, r.kind, r.name, r.namespace, r.port) == ("core", "Service", "web", "ns", 80)
    assert out.profile_ref.resource.group == "linkerd.io"
    assert not out.profile_ref.resource.kind
    assert not out.opaque_protocol


def test_opaque_protocol_from_service_annotation_or_defaults() -> None:
    plain = t.service("db", ports=[{"port": 3306}])
    assert service_profile(plain, 3306, None, SETTINGS, Issues()).opaque_protocol
    annotated = t.service("db", annotations={"config.linkerd.io/opaque-ports": "9000-9001"})
    assert service_profile(annotated, 9001, None, SETTINGS, Issues()).opaque_protocol
    assert not service_profile(annotated, 3306, None, SETTINGS, Issues()).opaque_protocol


def test_routes_conditions_retries_timeouts_budget_and_overrides() -> None:
    profile = sp(
        {
            "routes": [
                {
                    "name": "GET /books/{id}",
                    "condition": {"method": "GET", "pathRegex": "/books/[^/]*"},
                    "responseClasses": [
                        {"condition": {"status": {"min": 500, "max": 599}}, "isFailure": True}
                    ],
                    "isRetryable": True,
                    "timeout": "250ms",
                },
                {
                    "name": "not-post",
                    "condition": {"not": {"method": "POST"}, "any": [{"pathRegex": "/a"}]},
                },
            ],
            "retryBudget": {"retryRatio": 0.5, "minRetriesPerSecond": 3, "ttl": "1m"},
            "dstOverrides": [
                {"authority": "web-v1.ns.svc.cluster.local", "weight": "500m"},
                {"authority": "web-v2.ns.svc.cluster.local:8080", "weight": 1},
            ],
        }
    )
    issues = Issues()
    out = service_profile(t.service("web"), 80, profile, SETTINGS, issues)
    assert issues.messages == []
    first, second = out.routes
    assert first.metrics_labels["route"] == "GET /books/{id}"
    assert first.is_retryable
    assert first.timeout.ToMilliseconds() == 250
    seq = first.condition.all.matches
    assert seq[0].path.regex == "/books/[^/]*"
    assert seq[1].method.registered == 0  # GET
    assert first.response_classes[0].is_failure
    assert first.response_classes[0].condition.status.min == 500
    assert not second.is_retryable
    assert not second.HasField("timeout")
    assert out.retry_budget.retry_ratio == pytest.approx(0.5)
    assert out.retry_budget.ttl.seconds == 60
    assert [(d.authority, d.weight) for d in out.dst_overrides] == [
        ("web-v1.ns.svc.cluster.local:80", 5000),
        ("web-v2.ns.svc.cluster.local:8080", 10000),
    ]
    assert out.profile_ref.resource.kind == "ServiceProfile"


def test_bad_regex_route_is_skipped_and_reported() -> None:
    profile = sp(
        {
            "routes": [
                {"name": "bad", "condition": {"pathRegex": "/a/(unclosed"}},
                {"name": "good", "condition": {"pathRegex": "/ok"}},
                {"name": "weird", "condition": {"header": "x"}},
            ],
            "dstOverrides": [{"authority": "x", "weight": "lots"}],
        }
    )
    issues = Issues()
    out = service_profile(t.service("web"), 80, profile, SETTINGS, issues)
    assert [r.metrics_labels["route"] for r in out.routes] == ["good"]
    assert len(issues.messages) == 3
    assert "bad" in issues.messages[0]
    assert "pathRegex" in issues.messages[0]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("web.ns.svc.cluster.local:8080", ServiceAuthority("ns", "web", 8080)),
        ("web.ns.svc.cluster.local", ServiceAuthority("ns", "web", 80)),
        ("web-0.web.ns.svc.cluster.local.:5432", ServiceAuthority("ns", "web", 5432, "web-0")),
        ("10.0.0.1:80", IpAuthority("10.0.0.1", 80)),
        ("[fd00::1]:443", IpAuthority("fd00::1", 443)),
    ],
)
def test_parse_authority(path: str, expected: object) -> None:
    assert parse_authority(path, "cluster.local") == expected


@pytest.mark.parametrize(
    "path",
    [
        "",
        "web.ns:80",
        "example.com:80",
        "a.b.c.web.ns.svc.cluster.local:1",
        "web.ns.svc.cluster.local:0",
        "web.ns.svc.cluster.local:x",
    ],
)
def test_parse_authority_rejects(path: str) -> None:
    with pytest.raises(InvalidAuthorityError):
        parse_authority(path, "cluster.local")


def test_context_token_forms() -> None:
    token = '{"ns":"emoji", "nodeName":"node-1", "pod":"web-1"}\n'
    assert parse_context_token(token) == CallerContext("emoji", "node-1", "web-1")
    assert parse_context_token("ns:emoji") == CallerContext("emoji")
    assert parse_context_token("garbage{") == CallerContext()


def test_workload_forms() -> None:
    assert parse_workload('{"ns":"a","pod":"b"}') == Workload("a", pod="b")
    assert parse_workload("a:b") == Workload("a", pod="b")
    for bad in ("{", '{"pod":"b"}', "nopod", '{"ns":"a"}'):
        with pytest.raises(InvalidWorkloadError):
            parse_workload(bad)


def test_units() -> None:
    assert parse_quantity("500m") * 10000 == 5000
    assert parse_quantity("1") == 1
    assert parse_duration("1m30s") == 90
    assert parse_duration("250ms") == pytest.approx(0.25)
    for bad in ("", "5 s", "abc"):
        with pytest.raises(InvalidValueError):
            parse_duration(bad)
    with pytest.raises(InvalidValueError):
        parse_quantity("lots")


def test_port_sets() -> None:
    ports = parse_port_set("25, 3306-3307,http")
    assert ports.contains(3307)
    assert ports.contains(25)
    assert not ports.contains(3308)
    assert ports.contains(8080, {"http": 8080})
    for bad in ("0", "70000", "9-3", "a b"):
        with pytest.raises(InvalidPortSpecError):
            parse_port_set(bad)


def test_settings_from_env() -> None:
    s = DestinationSettings.from_env(
        {
            "GOSSAMER_DESTINATION_CLUSTER_DOMAIN": "example.org",
            "GOSSAMER_DESTINATION_DEFAULT_INBOUND_POLICY": "deny",
            "GOSSAMER_DESTINATION_ENABLE_H2_UPGRADE": "false",
            "GOSSAMER_DESTINATION_CLUSTER_NETWORKS": "10.0.0.0/8",
        }
    )
    assert s.cluster_domain == "example.org"
    assert s.default_inbound_policy == "deny"
    assert not s.enable_h2_upgrade
    assert len(s.cluster_networks) == 1
    for env in (
        {"GOSSAMER_DESTINATION_DEFAULT_INBOUND_POLICY": "allow-all"},
        {"GOSSAMER_DESTINATION_ENABLE_IPV6": "maybe"},
        {"GOSSAMER_DESTINATION_CLUSTER_NETWORKS": "10.0.0.0/33"},
        {"GOSSAMER_DESTINATION_STREAM_QUEUE_CAPACITY": "0"},
    ):
        with pytest.raises(SettingsError):
            DestinationSettings.from_env(env)


def test_route_regexes_the_proxy_cannot_run_in_linear_time_are_rejected() -> None:
    from gossamer_destination.httproutes import InvalidRouteError, route_match

    for regex in (r"/(a)\1", r"/(?=a)a", r"/a++"):
        with pytest.raises(InvalidRouteError, match="invalid regex"):
            route_match({"path": {"type": "RegularExpression", "value": regex}})
        issues = Issues()
        profile = sp({"routes": [{"name": "bad", "condition": {"pathRegex": regex}}]})
        out = service_profile(t.service("web"), 80, profile, SETTINGS, issues)
        assert out.routes == []
        assert "pathRegex" in issues.messages[0]
    match = route_match({"path": {"type": "RegularExpression", "value": "/(a+)+$"}})
    assert match.path.regex == "/(a+)+$"  # fine for RE2: linear whatever the input
