"""`gossamer viz` on the local mesh: the real Prometheus scraping the demo's real proxies."""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from localmesh import LocalMeshHandle, converge

pytestmark = pytest.mark.netns

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo" / "k8s"
PROMETHEUS = "http://127.0.0.1:9090"
#: Where the CLI output seen by the test is kept, for the reader of a run.
OUTPUT = Path(os.environ.get("GOSSAMER_VIZ_OUTPUT", "/dev/null"))


@pytest.fixture(scope="module")
def demo(local_mesh: LocalMeshHandle) -> LocalMeshHandle:
    for path in sorted(DEMO.glob("*.yaml")):
        local_mesh.apply(path.read_text())
    for app, count in (("slow", 2), ("flaky", 2), ("web", 1), ("traffic", 1)):
        local_mesh.wait_ready("demo", f"app={app}", count, limit=180)
    return local_mesh


def gossamer(mesh: LocalMeshHandle, *args: str) -> str:
    """The ``gossamer`` CLI in the node namespace, where Prometheus and the apiserver are."""
    env = ["env", f"KUBECONFIG={mesh.kubeconfig}"]
    argv = [*env, sys.executable, "-m", "gossamer_cli.main", *args]
    out = mesh.node_run(argv, check=False, limit=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def prometheus_query(mesh: LocalMeshHandle, promql: str) -> list[dict[str, Any]]:
    url = f"{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    result: list[dict[str, Any]] = json.loads(mesh.node_curl(url))["data"]["result"]
    return result


def test_prometheus_scrapes_every_proxy_with_linkerds_labels(demo: LocalMeshHandle) -> None:
    pods = {p["metadata"]["name"] for p in demo.get("pods", "", "demo")["items"]}
    up = converge(
        lambda: prometheus_query(demo, 'up{job="linkerd-proxy", namespace="demo"} == 1'),
        lambda series: {s["metric"]["pod"] for s in series} == pods,
    )
    assert {s["metric"]["pod"] for s in up} == pods
    web = next(s["metric"] for s in up if s["metric"].get("app") == "web")
    assert web["deployment"] == "web"
    assert web["control_plane_ns"] == "gossamer"
    assert web["instance"].endswith(":4191")
    assert not any(k.startswith("__") for k in web if k != "__name__")


def test_viz_stat_shows_the_demos_golden_metrics(demo: LocalMeshHandle) -> None:
    def rows() -> dict[str, Any]:
        out = json.loads(gossamer(demo, "viz", "stat", "deploy", "-n", "demo", "-o", "json"))
        return {r["name"]: r for r in out}

    def served(stats: dict[str, Any]) -> bool:
        return all((stats.get(n) or {}).get("rps") for n in ("web", "slow", "flaky"))

    stats = converge(rows, served, limit=90)
    assert set(stats) == {"web", "slow", "flaky", "traffic"}
    for name, replicas in (("web", 1), ("slow", 2), ("flaky", 2)):
        row = stats[name]
        assert row["meshed"] == f"{replicas}/{replicas}"
        assert row["rps"] > 0
        assert 0 < row["success"] <= 1
        assert row["latency_ms_p50"] is not None
        assert row["tcp_open_connections"] >= 1
    # slow answers after 150 ms: its median latency says so.
    assert stats["slow"]["latency_ms_p50"] >= 100
    assert stats["traffic"]["rps"] is None  # nothing calls the load generator
    table = gossamer(demo, "viz", "stat", "deploy", "-n", "demo")
    lines = table.splitlines()
    assert lines[0].split() == [
        "NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN",
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:]] == ["flaky", "slow", "traffic", "web"]
    to_slow = gossamer(demo, "viz", "stat", "deploy", "-n", "demo", "--to", "deploy/slow")
    with OUTPUT.open("a") as out:
        out.write(f"$ gossamer viz stat deploy -n demo\n{table}\n")
        out.write(f"$ gossamer viz stat deploy -n demo --to deploy/slow\n{to_slow}\n")
    (web_to_slow,) = [line.split() for line in to_slow.splitlines()[1:]]
    assert web_to_slow[0] == "web"
    assert web_to_slow[3].endswith("rps")
    from_web = gossamer(demo, "viz", "stat", "deploy", "-n", "demo", "--from", "deploy/web")
    with OUTPUT.open("a") as out:
        out.write(f"$ gossamer viz stat deploy -n demo --from deploy/web\n{from_web}\n")
    called = {line.split()[0]: line.split() for line in from_web.splitlines()[1:]}
    assert set(called) == {"slow", "flaky"}
    assert all(row[3].endswith("rps") for row in called.values())


def test_viz_edges_show_mtls_between_the_demos_deployments(demo: LocalMeshHandle) -> None:
    identity = "{}.demo.serviceaccount.identity.gossamer.cluster.local"

    def edges() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(
            gossamer(demo, "viz", "edges", "deploy", "-n", "demo", "-o", "json")
        )
        return found

    wanted = {("traffic", "web"), ("web", "slow"), ("web", "flaky")}
    found = converge(edges, lambda e: wanted <= {(x["src"], x["dst"]) for x in e})
    pairs = {(x["src"], x["dst"]): x for x in found}
    assert wanted <= set(pairs)
    for src, dst in wanted:
        edge = pairs[(src, dst)]
        assert edge["no_tls_reason"] == ""
        assert edge["client_id"] == identity.format(src)
        assert edge["server_id"] == identity.format(dst)
    table = gossamer(demo, "viz", "edges", "deploy", "-n", "demo", "-o", "wide")
    with OUTPUT.open("a") as out:
        out.write(f"$ gossamer viz edges deploy -n demo -o wide\n{table}\n")
    assert table.splitlines()[0].split() == [
        "SRC", "DST", "SRC_NS", "DST_NS", "CLIENT_ID", "SERVER_ID", "SECURED",
    ]  # fmt: skip


def test_viz_routes_show_the_flaky_profiles_route(demo: LocalMeshHandle) -> None:
    def rows() -> dict[str, Any]:
        out = gossamer(demo, "viz", "routes", "svc/flaky", "-n", "demo", "-o", "json")
        return {r["route"]: r for r in json.loads(out)}

    found = converge(rows, lambda r: bool((r.get("demo.Quote/Get") or {}).get("rps")))
    route = found["demo.Quote/Get"]
    assert route["service"] == "flaky"
    assert route["rps"] > 0
    assert 0 < route["success"] <= 1
    table = gossamer(demo, "viz", "routes", "deploy/web", "-n", "demo", "--to", "svc/flaky")
    with OUTPUT.open("a") as out:
        out.write(f"$ gossamer viz routes deploy/web -n demo --to svc/flaky\n{table}\n")
    assert table.splitlines()[1].split()[:2] == ["demo.Quote/Get", "flaky"]


def test_viz_check_passes_on_the_local_mesh(demo: LocalMeshHandle) -> None:
    out = converge(
        lambda: demo.node_run(
            [sys.executable, "-m", "gossamer_cli.main", "viz", "check"], check=False
        ),
        lambda r: r.returncode == 0,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "\u221a prometheus scrapes every proxy" in out.stdout
