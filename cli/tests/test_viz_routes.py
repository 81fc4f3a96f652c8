"""`gossamer viz routes`: PromQL over route_* series and rows per ServiceProfile route."""

from __future__ import annotations

import json
from typing import Any

from gossamer_cli.viz import routes
from gossamer_cli.viz.promapi import parse_vector


def reply(*series: tuple[dict[str, str], str]) -> dict[str, Any]:
    result = [{"metric": m, "value": [1.0, v]} for m, v in series]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_selector_and_queries_for_a_service_from_a_workload() -> None:
    selector = routes.routes_selector(
        service="flaky", service_namespace="demo", client={"namespace": "demo", "deployment": "web"}
    )
    queries = routes.routes_queries(selector, "1m")
    assert queries["responses"] == (
        'sum(increase(route_response_total{direction="outbound", '
        'dst=~"flaky\\\\.demo\\\\.svc\\\\.cluster\\\\.local:[0-9]+", namespace="demo", '
        'deployment="web"}[1m])) by (dst, rt_route, classification)'
    )
    assert "route_response_latency_ms_bucket" in queries["p99"]


def test_rows_list_profile_routes_traffic_and_the_default_route() -> None:
    dst = "flaky.demo.svc.cluster.local:9090"
    get = {"dst": dst, "rt_route": "demo.Quote/Get"}
    answers = {
        "responses": parse_vector(
            reply(
                ({**get, "classification": "success"}, "54"),
                ({**get, "classification": "failure"}, "6"),
                ({"dst": dst, "classification": "success"}, "6"),
            )
        ),
        "p50": parse_vector(reply((get, "12"))),
    }
    rows = routes.route_rows(
        answers, "1m", profile_routes={"flaky": ["demo.Quote/Get", "demo.Quote/List"]}
    )
    assert [(r.route, r.service) for r in rows] == [
        ("demo.Quote/Get", "flaky"),
        ("demo.Quote/List", "flaky"),
        ("[DEFAULT]", "flaky"),
    ]
    lines = routes.render_table(rows).splitlines()
    assert lines[0].split() == [
        "ROUTE", "SERVICE", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99",
    ]  # fmt: skip
    assert lines[1].split() == ["demo.Quote/Get", "flaky", "90.00%", "1.0rps", "12ms", "-", "-"]
    assert lines[2].split() == ["demo.Quote/List", "flaky", "-", "-", "-", "-", "-"]
    assert lines[3].split()[:4] == ["[DEFAULT]", "flaky", "100.00%", "0.1rps"]
    assert json.loads(routes.render_json(rows))[0]["success"] == 0.9
