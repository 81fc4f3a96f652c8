"""`gossamer viz stat` and `edges`: PromQL, rows from canned Prometheus answers, output."""

from __future__ import annotations

import json
from typing import Any

import pytest
from gossamer_cli.viz import edges, stat
from gossamer_cli.viz.meshed import meshed_counts
from gossamer_cli.viz.promapi import PrometheusError, Sample, parse_vector
from gossamer_cli.viz.resources import parse_resource


def reply(*series: tuple[dict[str, str], str]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [1700000000.0, v]} for m, v in series],
        },
    }


def test_parse_vector_reads_samples_and_drops_nan() -> None:
    samples = parse_vector(reply(({"deployment": "web"}, "12.5"), ({"deployment": "x"}, "NaN")))
    assert samples == [Sample({"deployment": "web"}, 12.5)]


def test_parse_vector_refuses_errors_and_garbage() -> None:
    with pytest.raises(PrometheusError, match="bad_data"):
        parse_vector({"status": "error", "errorType": "bad_data", "error": "parse error"})
    with pytest.raises(PrometheusError, match="malformed"):
        parse_vector({"status": "success", "data": {"resultType": "vector", "result": [{}]}})


def test_stat_deploy_reads_inbound_series_grouped_by_deployment() -> None:
    scope = stat.stat_scope(parse_resource("deploy"), "demo")
    queries = stat.stat_queries(scope, "1m")
    assert queries["responses"] == (
        'sum(increase(response_total{direction="inbound", namespace="demo"}[1m])) '
        "by (namespace, deployment, classification)"
    )
    assert queries["p95"] == (
        'histogram_quantile(0.95, sum(rate(response_latency_ms_bucket{direction="inbound", '
        'namespace="demo"}[1m])) by (le, namespace, deployment))'
    )
    assert 'peer="src"' in queries["tcp_open"]


def test_stat_to_and_from_read_outbound_series() -> None:
    to = stat.stat_scope(
        parse_resource("deploy/web"),
        "demo",
        to_resource=parse_resource("deploy/slow"),
        to_namespace="demo",
    )
    assert to.direction == "outbound"
    assert to.selector == {
        "namespace": "demo",
        "deployment": "web",
        "dst_namespace": "demo",
        "dst_deployment": "slow",
    }
    assert to.name_label == "deployment"
    frm = stat.stat_scope(
        parse_resource("deploy"),
        "demo",
        from_resource=parse_resource("deploy/web"),
        from_namespace="demo",
    )
    assert (frm.direction, frm.name_label) == ("outbound", "dst_deployment")
    assert frm.selector == {"dst_namespace": "demo", "namespace": "demo", "deployment": "web"}
    svc = stat.stat_scope(parse_resource("svc/slow"), "demo")
    assert (svc.direction, svc.name_label) == ("outbound", "dst_service")


def test_stat_rows_compute_success_rate_rps_latency_and_tcp() -> None:
    scope = stat.stat_scope(parse_resource("deploy"), "demo")
    web = {"namespace": "demo", "deployment": "web"}
    answers = {
        "responses": parse_vector(
            reply(
                ({**web, "classification": "success"}, "90"),
                ({**web, "classification": "failure"}, "30"),
            )
        ),
        "p50": parse_vector(reply((web, "4.2"))),
        "p95": parse_vector(reply((web, "45"))),
        "p99": parse_vector(reply((web, "95.6"))),
        "tcp_open": parse_vector(reply((web, "3"))),
    }
    rows = stat.stat_rows(
        scope,
        "deployment",
        answers,
        "1m",
        known=[("demo", "web"), ("demo", "idle")],
        meshed={("demo", "web"): (1, 1), ("demo", "idle"): (0, 2)},
    )
    assert [r.name for r in rows] == ["idle", "web"]
    idle, w = rows
    assert w.success_rate == 0.75
    assert w.rps == 2.0
    assert w.tcp_open == 3
    assert idle.rps is None
    assert idle.success_rate is None
    table = stat.render_table(rows).splitlines()
    assert table[0].split() == [
        "NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN",
    ]  # fmt: skip
    assert table[1].split() == ["idle", "0/2", "-", "-", "-", "-", "-", "-"]
    assert table[2].split() == ["web", "1/1", "75.00%", "2.0rps", "4ms", "45ms", "96ms", "3"]
    wide = stat.render_table(rows, wide=True, all_namespaces=True).splitlines()
    assert wide[0].split()[0] == "NAMESPACE"
    assert wide[0].split()[-2:] == ["READ_BYTES/SEC", "WRITE_BYTES/SEC"]
    assert wide[2].split()[:2] == ["demo", "web"]
    (as_json,) = [r for r in json.loads(stat.render_json(rows)) if r["name"] == "web"]
    assert as_json["success"] == 0.75
    assert as_json["latency_ms_p99"] == 95.6


def test_window_must_be_a_duration() -> None:
    assert stat.window_seconds("30s") == 30
    assert stat.window_seconds("2m") == 120
    for bad in ("", "1", "0s", "1d", "-1m", "1.5m"):
        with pytest.raises(ValueError, match="bad time window"):
            stat.window_seconds(bad)


def pod(name: str, rs: str | None, meshed: bool, **meta: Any) -> dict[str, Any]:
    owners = [{"kind": "ReplicaSet", "name": f"{rs}-abc", "controller": True}] if rs else []
    init = [{"name": "linkerd-proxy"}] if meshed else []
    return {
        "metadata": {
            "name": name,
            "namespace": "demo",
            "labels": {"pod-template-hash": "abc", "app": rs or name},
            "ownerReferences": owners,
            **meta,
        },
        "spec": {"initContainers": init, "containers": [{"name": "app"}]},
        "status": {"phase": "Running"},
    }


def test_meshed_counts_per_deployment_service_and_namespace() -> None:
    pods = [
        pod("web-abc-1", "web", True),
        pod("web-abc-2", "web", False),
        pod("web-abc-3", "web", True, deletionTimestamp="2026-01-01T00:00:00Z"),
        pod("lone", None, True),
    ]
    assert meshed_counts("deployment", pods) == {("demo", "web"): (1, 2)}
    assert meshed_counts("namespace", pods) == {("", "demo"): (2, 3)}
    svc = {"metadata": {"name": "web", "namespace": "demo"}, "spec": {"selector": {"app": "web"}}}
    assert meshed_counts("service", pods, [svc]) == {("demo", "web"): (1, 2)}


def test_edges_join_client_and_server_identities() -> None:
    web_id = "web.demo.serviceaccount.identity.gossamer.cluster.local"
    slow_id = "slow.demo.serviceaccount.identity.gossamer.cluster.local"
    answers = {
        "outbound": parse_vector(
            reply(
                (
                    {"namespace": "demo", "deployment": "web", "dst_namespace": "demo",
                     "dst_deployment": "slow", "tls": "true", "server_id": slow_id},
                    "4",
                ),
                (
                    {"namespace": "demo", "deployment": "web", "dst_namespace": "other",
                     "dst_deployment": "plain", "tls": "no_identity",
                     "no_tls_reason": "not_provided_by_service_discovery"},
                    "1",
                ),
            )
        ),
        "inbound": parse_vector(
            reply(
                (
                    {"namespace": "demo", "deployment": "slow", "client_id": web_id, "tls": "true"},
                    "4",
                )
            )
        ),
    }  # fmt: skip
    found = edges.build_edges("deployment", answers)
    assert [(e.src, e.dst, e.secured) for e in found] == [
        ("web", "slow", True),
        ("web", "plain", False),
    ]
    assert found[0].client_id == web_id
    assert found[0].server_id == slow_id
    lines = edges.render_table(found, wide=True).splitlines()
    assert lines[0].split() == [
        "SRC",
        "DST",
        "SRC_NS",
        "DST_NS",
        "CLIENT_ID",
        "SERVER_ID",
        "SECURED",
    ]
    assert lines[1].split() == ["web", "slow", "demo", "demo", web_id, slow_id, "\u221a"]
    assert lines[2].split()[-1] == "not_provided_by_service_discovery"
    assert (
        'direction="outbound", peer="dst", namespace="demo"'
        in edges.edges_queries("deployment", "demo")["outbound"]
    )
