"""Every Grafana panel query returns series from the real Prometheus scraping the demo.

Each dashboard's template variables are resolved as Grafana would (its ``label_values``
query against Prometheus, earlier variables substituted first), the demo's subject picked
from the values found (namespace ``demo``, deployment ``web``, a ``web`` pod, web's
authority, flaky's profile route), then every panel query runs with those values.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from gossamer_cli.viz import dashboards
from localmesh import LocalMeshHandle, converge

pytestmark = pytest.mark.netns

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo" / "k8s"
PROMETHEUS = "http://127.0.0.1:9090"
OUTPUT = Path(os.environ.get("GOSSAMER_VIZ_OUTPUT", "/dev/null"))
#: The value each variable takes for the demo: an exact value, or a prefix of one.
WANTED = {
    "namespace": "demo",
    "deployment": "web",
    "pod": "web-",
    "authority": "web.demo.svc.cluster.local:",
    "route": "demo.Quote/Get",
}


@pytest.fixture(scope="module")
def demo(local_mesh: LocalMeshHandle) -> LocalMeshHandle:
    for path in sorted(DEMO.glob("*.yaml")):
        local_mesh.apply(path.read_text())
    for app, count in (("slow", 2), ("flaky", 2), ("web", 1), ("traffic", 1)):
        local_mesh.wait_ready("demo", f"app={app}", count, limit=180)
    return local_mesh


def prometheus(mesh: LocalMeshHandle, path: str, params: dict[str, Any]) -> Any:
    url = f"{PROMETHEUS}{path}?" + urllib.parse.urlencode(params, doseq=True)
    body = json.loads(mesh.node_curl(url))
    assert body["status"] == "success", body
    return body["data"]


def label_values(mesh: LocalMeshHandle, selector: str, label: str) -> list[str]:
    """Grafana's ``label_values(selector, label)``: the label's values over the last 10 min."""
    now = time.time()
    found = prometheus(
        mesh, "/api/v1/series", {"match[]": [selector], "start": now - 600, "end": now}
    )
    return sorted({s[label] for s in found if s.get(label)})


def pick(name: str, values: list[str]) -> str | None:
    wanted = WANTED[name]
    exact = [v for v in values if v == wanted]
    return (exact or [v for v in values if v.startswith(wanted)] or [None])[0]


def resolve(mesh: LocalMeshHandle, board: dict[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for variable in dashboards.variables(board):
        assert variable.selector, variable
        selector = dashboards.substitute(variable.selector, values)
        found = converge(
            lambda s=selector, v=variable: label_values(mesh, s, v.label),  # type: ignore[misc]
            lambda found, n=variable.name: pick(n, found) is not None,  # type: ignore[misc]
            limit=90,
        )
        value = pick(variable.name, found)
        assert value is not None, f"${variable.name}: {selector} gave {found}"
        values[variable.name] = value
    return values


def series(mesh: LocalMeshHandle, expr: str) -> list[dict[str, Any]]:
    data = prometheus(mesh, "/api/v1/query", {"query": expr})
    result: list[dict[str, Any]] = data["result"]
    return result


def test_every_panel_query_returns_series_for_the_demo(demo: LocalMeshHandle) -> None:
    empty = []
    counted = 0
    for name in dashboards.names():
        board = dashboards.load(name)
        values = resolve(demo, board)
        for query in dashboards.queries(name, board):
            expr = dashboards.substitute(query.expr, values)
            found = converge(lambda e=expr: series(demo, e), bool, limit=60)  # type: ignore[misc]
            counted += 1
            if not found:
                empty.append(f"{name} / {query.panel} [{query.ref_id}]: {expr}")
        with OUTPUT.open("a") as out:
            out.write(f"grafana {name}: variables {values}\n")
    assert counted >= 50
    assert empty == [], "panel queries without series:\n" + "\n".join(empty)
