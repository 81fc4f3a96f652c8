"""The Grafana dashboards: valid JSON, a query on every panel, only metrics the proxy exports."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from gossamer_cli.main import cli
from gossamer_cli.viz import dashboards
from gossamer_proxy.app import Proxy
from gossamer_proxy.config import load_settings
from gossamer_proxy.outbound.discovery import OutboundDiscovery

#: Labels the ``linkerd-proxy`` scrape job adds to every series (see viz/scrape.py).
SCRAPE_LABELS = {"namespace", "pod", "deployment"}


def exported_families() -> frozenset[str]:
    """Every family a proxy registers: the app's own and outbound discovery's."""
    proxy = Proxy(
        load_settings(
            {
                "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS": "127.0.0.1:0",
                "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "127.0.0.1:0",
                "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "127.0.0.1:0",
            }
        )
    )
    registry = proxy.metrics.registry
    OutboundDiscovery(None, networks=(), mesh_identity=False, registry=registry)  # type: ignore[arg-type]
    return registry.names()


def all_dashboards() -> dict[str, dict[str, Any]]:
    return {name: dashboards.load(name) for name in dashboards.names()}


def test_the_five_dashboards_ship_with_unique_uids() -> None:
    found = all_dashboards()
    assert set(found) == {"authority", "deployment", "pod", "route", "top-line"}
    uids = [d["uid"] for d in found.values()]
    assert len(set(uids)) == len(uids)
    for name, d in found.items():
        assert d["title"].startswith("Gossamer "), name
        assert isinstance(d["schemaVersion"], int)
        assert isinstance(d["panels"], list)


def test_every_data_panel_has_a_prometheus_query_and_a_unique_id() -> None:
    for name, d in all_dashboards().items():
        ids = [p["id"] for p in d["panels"]]
        assert len(set(ids)) == len(ids), name
        panels = list(dashboards.data_panels(d))
        assert panels, name
        for panel in panels:
            targets = panel.get("targets") or []
            assert targets, f"{name}: panel {panel['title']!r} has no query"
            for target in targets:
                assert target["expr"].strip(), f"{name}: {panel['title']!r} {target['refId']}"
                assert target["datasource"]["type"] == "prometheus"
            assert panel["gridPos"]["w"] <= 24


def test_every_metric_in_a_query_is_a_family_the_proxy_exports() -> None:
    exported = exported_families()
    used = set()
    for name, d in all_dashboards().items():
        texts = [q.expr for q in dashboards.queries(name, d)]
        texts += [v.selector for v in dashboards.variables(d) if v.selector]
        for text in texts:
            metrics = dashboards.metric_names(text)
            assert metrics, f"{name}: no metric in {text}"
            for metric in metrics:
                assert dashboards.family_of(metric) in exported, f"{name}: {metric} in {text}"
            used |= metrics
    # The families the issue names are all shown somewhere.
    for family in (
        "request_total",
        "response_total",
        "response_latency_ms_bucket",
        "tcp_open_connections",
        "route_request_total",
        "outbound_http_route_request_statuses_total",
        "inbound_http_authz_allow_total",
    ):
        assert family in used


def test_every_variable_in_a_query_is_defined_by_the_dashboard() -> None:
    for name, d in all_dashboards().items():
        defined = {v.name: "x" for v in dashboards.variables(d)}
        assert "namespace" in defined, name
        for query in dashboards.queries(name, d):
            dashboards.substitute(query.expr, defined)  # raises on an undefined $variable
        for entry in d["templating"]["list"]:
            if entry["type"] == "datasource":
                assert entry["query"] == "prometheus"


def test_deployment_and_pod_dashboards_use_linkerds_variables() -> None:
    deployment = [v.name for v in dashboards.variables(dashboards.load("deployment"))]
    assert deployment == ["namespace", "deployment"]
    pod = [v.name for v in dashboards.variables(dashboards.load("pod"))]
    assert pod == ["namespace", "pod"]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            "histogram_quantile(0.95, sum by (le, deployment) "
            '(rate(response_latency_ms_bucket{direction="inbound", x=~"a|b"}[1m])))',
            {"response_latency_ms_bucket"},
        ),
        (
            "sum(rate(request_total[5m])) / ignoring (tls) group_left sum(tcp_open_connections)",
            {"request_total", "tcp_open_connections"},
        ),
        ('a_total{le="1e3"} or on (x) (0 * b) > bool 1e3', {"a_total", "b"}),
        ('count(up{job="sum(x)"}) offset 5m', {"up"}),
    ],
)
def test_metric_names_are_parsed_from_promql(expr: str, names: set[str]) -> None:
    assert dashboards.metric_names(expr) == names


def test_substitute_fails_clearly_on_an_unknown_variable() -> None:
    values = {"namespace": "demo", "pod": "p"}
    assert dashboards.substitute('x{a="$namespace", b="${pod}"}', values) == 'x{a="demo", b="p"}'
    with pytest.raises(dashboards.DashboardError, match=r"no value for \$deployment"):
        dashboards.substitute('x{deployment="$deployment"}', {})


def test_a_variable_that_is_not_label_values_is_refused() -> None:
    board = {"templating": {"list": [{"type": "query", "name": "v", "query": "up"}]}}
    with pytest.raises(dashboards.DashboardError, match=r"\$v: not label_values"):
        dashboards.variables(board)


def test_viz_install_renders_each_dashboard_as_a_sidecar_configmap() -> None:
    result = CliRunner().invoke(cli, ["viz", "install", "--namespace", "obs"])
    assert result.exit_code == 0, result.output
    objects = [o for o in yaml.safe_load_all(result.output) if o]
    maps = {
        o["metadata"]["name"]: o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("grafana-dashboard-")
    }
    assert set(maps) == {f"grafana-dashboard-{n}" for n in dashboards.names()}
    for name, cm in maps.items():
        assert cm["metadata"]["namespace"] == "obs"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        (key,) = cm["data"]
        stem = name.removeprefix("grafana-dashboard-")
        assert key == f"gossamer-{stem}.json"
        assert yaml.safe_load(cm["data"][key]) == dashboards.load(stem)
