"""``gossamer diagnostics`` and the debuggable proxy in the local mesh (issue 19).

The CLI runs in the node namespace, as ``gossamer check`` does there: it finds the control
plane's gRPC addresses in local mode's ConfigMap and the proxies at their pod IPs. The
``web`` pods ask for a JSON access log (``config.linkerd.io/access-log``), which the
injector passes to their proxies.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from localmesh import LocalMeshHandle, echo_app, service_url

pytestmark = pytest.mark.netns

NS = "mesh-diagnostics"
GOSSAMER = str(Path(sys.executable).parent / "gossamer")
AUTHORITY = f"web.{NS}.svc.cluster.local:8080"


@pytest.fixture(scope="module")
def mesh(local_mesh: LocalMeshHandle) -> Iterator[LocalMeshHandle]:
    local_mesh.deploy(
        NS,
        echo_app(NS, "web", replicas=2, annotations={"config.linkerd.io/access-log": "json"}),
        echo_app(NS, "client", service=False),
        ready={"web": 2, "client": 1},
    )
    yield local_mesh
    local_mesh.delete_namespace(NS)


def gossamer(mesh: LocalMeshHandle, *args: str) -> Any:
    return mesh.node_run(
        ["env", f"KUBECONFIG={mesh.kubeconfig}", GOSSAMER, "diagnostics", *args],
        check=False,
        limit=60,
    )


def test_endpoints_lists_both_web_pods(mesh: LocalMeshHandle) -> None:
    pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in mesh.pods(NS, "app=web")}
    out = gossamer(mesh, "endpoints", "-o", "json", AUTHORITY)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {(r["pod"], r["ip"], r["port"]) for r in rows} == {
        (name, ip, 8080) for name, ip in pods.items()
    }
    assert {r["service"] for r in rows} == {f"web.{NS}"}
    table = gossamer(mesh, "endpoints", AUTHORITY)
    assert table.stdout.splitlines()[0].split() == ["NAMESPACE", "IP", "PORT", "POD", "SERVICE"]


def test_profile_and_policy_from_the_control_plane(mesh: LocalMeshHandle) -> None:
    profile = gossamer(mesh, "profile", AUTHORITY)
    assert profile.returncode == 0, profile.stderr
    assert json.loads(profile.stdout)["fully_qualified_name"] == f"web.{NS}.svc.cluster.local"
    outbound = gossamer(mesh, "policy", "-n", NS, "-o", "json", "svc/web", "8080")
    assert outbound.returncode == 0, outbound.stderr
    assert json.loads(outbound.stdout)["metadata"]["resource"]["name"] == "web"
    pod = mesh.pods(NS, "app=web")[0]["metadata"]["name"]
    inbound = gossamer(mesh, "policy", "-n", NS, f"po/{pod}", "8080")
    assert inbound.returncode == 0, inbound.stderr
    assert "protocol" in yaml.safe_load(inbound.stdout)


def test_proxy_metrics_and_the_access_log_after_traffic(mesh: LocalMeshHandle) -> None:
    (client,) = mesh.pods(NS, "app=client")
    summary = mesh.load(client, service_url(NS, "web", "/hello"), 20, concurrency=2)
    assert summary["ok"] == 20, summary
    out = gossamer(mesh, "proxy-metrics", "-n", NS, "deploy/web")
    assert out.returncode == 0, out.stderr
    headers = [line for line in out.stdout.splitlines() if line.startswith("# POD ")]
    assert [h.split("(")[1] for h in headers] == ["1 of 2)", "2 of 2)"]
    assert out.stdout.count("proxy_build_info{") == 2
    assert 'direction="inbound"' in out.stdout
    hidden = gossamer(mesh, "proxy-metrics", "--obfuscate", "-n", NS, "deploy/web")
    assert f"web.{NS}.svc" not in hidden.stdout

    deadline = time.monotonic() + 30
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        logs = "".join(mesh.pod_logs(p, tail=200_000) for p in mesh.pods(NS, "app=web"))
        lines = [
            json.loads(line)
            for line in logs.splitlines()
            if line.startswith('{"client.addr"') and '"/hello"' in line
        ]
        if len(lines) >= 20:
            break
        time.sleep(0.5)
    assert len(lines) >= 20, mesh.pod_logs(mesh.pods(NS, "app=web")[0])
    assert {x["status"] for x in lines} == {200}
    assert all(x["client.id"].startswith(f"client.{NS}.serviceaccount.") for x in lines)
