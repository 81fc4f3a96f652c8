"""`gossamer viz tap` and `viz top` on the local mesh: the demo's real proxies, tapped over mTLS."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from localmesh import LocalMeshHandle

pytestmark = pytest.mark.netns

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo" / "k8s"
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
    """The ``gossamer`` CLI in the node namespace, where the pod addresses are reachable."""
    env = ["env", f"KUBECONFIG={mesh.kubeconfig}", f"GOSSAMER_STATE_DIR={mesh.state_dir}"]
    argv = [*env, sys.executable, "-m", "gossamer_cli.main", *args]
    out = mesh.node_run(argv, check=False, limit=60)
    assert out.returncode == 0, out.stderr
    assert "cannot tap" not in out.stderr, out.stderr
    return out.stdout


_REQ = re.compile(
    r"^req id=\d+:\d+ proxy=(in |out) src=[\d.]+:\d+ dst=[\d.]+:\d+ tls=(\S*) "
    r":method=(\S+) :authority=(\S*) :path=(\S+)$"
)
_RSP = re.compile(r"^rsp id=\d+:\d+ proxy=(in |out) .* :status=(\d+) latency=\d+µs$")
_END = re.compile(r"^end id=\d+:\d+ proxy=(in |out) .* duration=\d+µs response-length=\d+B$")


def test_viz_tap_prints_live_requests_of_the_web_deployment(demo: LocalMeshHandle) -> None:
    out = gossamer(demo, "viz", "tap", "deploy/web", "-n", "demo", "--duration", "6")
    with OUTPUT.open("a") as log:
        log.write(f"$ gossamer viz tap deploy/web -n demo\n{out}\n")
    lines = out.splitlines()
    reqs = [m for m in map(_REQ.match, lines) if m]
    rsps = [m for m in map(_RSP.match, lines) if m]
    ends = [m for m in map(_END.match, lines) if m]
    assert reqs, out
    assert rsps, out
    assert ends, out
    assert len(reqs) + len(rsps) + len(ends) == len(lines), out
    directions = {m.group(1) for m in reqs}
    assert directions == {"in ", "out"}  # traffic → web, and web → slow/flaky
    # Everything between the demo's meshed pods is mTLS.
    assert {m.group(2) for m in reqs} == {"true"}
    assert {m.group(2) for m in rsps} <= {"200", "500", "503"}
    # Filters reach the proxies: only web's calls to slow.
    to_slow = gossamer(
        demo, "viz", "tap", "deploy/web", "-n", "demo", "--to", "deploy/slow", "--duration", "4"
    )
    slow_reqs = [m for m in map(_REQ.match, to_slow.splitlines()) if m]
    assert slow_reqs, to_slow
    assert {m.group(1) for m in slow_reqs} == {"out"}
    wide = gossamer(demo, "viz", "tap", "deploy/web", "-n", "demo", "-o", "wide", "--duration", "3")
    assert "src_res=deploy/" in wide
    assert "dst_res=deploy/" in wide


def test_viz_top_shows_the_web_deployments_paths(demo: LocalMeshHandle) -> None:
    out = gossamer(demo, "viz", "top", "deploy/web", "-n", "demo", "--snapshot", "6")
    with OUTPUT.open("a") as log:
        log.write(f"$ gossamer viz top deploy/web -n demo --snapshot 6\n{out}\n")
    lines = out.splitlines()
    assert lines[0].split() == [
        "Source", "Destination", "Method", "Path", "Count", "Best", "Worst", "Last",
        "Success", "Rate",
    ]  # fmt: skip
    rows = [line.split() for line in lines[1:]]
    assert rows, out
    for row in rows:
        assert int(row[4]) > 0
        assert row[-1].endswith("%")
    sources = {row[0] for row in rows}
    destinations = {row[1] for row in rows}
    assert any(s.startswith("traffic-") for s in sources), out
    assert any(d.startswith(("slow-", "flaky-")) for d in destinations), out


# -- the tap service -------------------------------------------------------------------------

TAP_PATH = "/apis/tap.linkerd.io/v1alpha1/watch/namespaces/demo/deployments/web/tap"
TAPPER_RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: tapper, namespace: demo}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: intruder, namespace: demo}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: e2e-tap-admin}
rules: [{apiGroups: [tap.linkerd.io], resources: ["*"], verbs: [watch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: e2e-tapper, namespace: demo}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: e2e-tap-admin}
subjects: [{kind: ServiceAccount, name: tapper, namespace: demo}]
"""


def tap_service_call(
    mesh: LocalMeshHandle, token: str | None, body: str, path: str = TAP_PATH
) -> tuple[int, str]:
    """POST to the local tap service from the node namespace: (status, body)."""
    ready = json.loads((mesh.state_dir / "ready.json").read_text())
    url = ready["tap_url"]
    port = url.rsplit(":", 1)[1]
    argv = [
        "curl", "-sS", "-m", "20", "-o", "-", "-w", "\n%{http_code}",
        "--cacert", ready["tap_ca_file"],
        "--resolve", f"tap.gossamer-viz.svc:{port}:127.0.0.1",
        "-H", "Content-Type: application/json", "--data", body,
        f"https://tap.gossamer-viz.svc:{port}{path}",
    ]  # fmt: skip
    if token is not None:
        argv[1:1] = ["-H", f"Authorization: Bearer {token}"]
    out = mesh.node_run(argv, check=False, limit=30)
    text, _, status = out.stdout.rpartition("\n")
    assert status.isdigit(), out.stderr
    return int(status), text


def test_the_tap_service_streams_the_demos_requests_to_an_authorized_caller(
    demo: LocalMeshHandle,
) -> None:
    demo.apply(TAPPER_RBAC)
    token = demo.kubectl("create", "token", "tapper", "-n", "demo").strip()
    body = json.dumps({"seconds": 6, "maxEvents": 60, "maxRps": 50})
    status, text = tap_service_call(demo, token, body)
    assert status == 200, text
    lines = [json.loads(line) for line in text.splitlines()]
    with OUTPUT.open("a") as log:
        log.write(f"$ tap service {TAP_PATH} (tapper)\n{len(lines)} lines, last {lines[-1]}\n")
    events, end = lines[:-1], lines[-1]
    assert end["end"] in ("max-events", "time-limit"), end
    assert end["errors"] == []
    assert events
    assert all(e["source"].startswith("demo/web-") for e in events)
    requests = [
        e["event"]["http"]["requestInit"] for e in events if "requestInit" in e["event"]["http"]
    ]
    assert requests, events[:3]
    assert all(r["path"].startswith("/") for r in requests)
    responses = [
        e["event"]["http"]["responseInit"] for e in events if "responseInit" in e["event"]["http"]
    ]
    assert responses
    assert {r["httpStatus"] for r in responses} <= {200, 500, 503}
    # The service taps with its own identity: the service's log names the caller it allowed.
    log_text = (demo.state_dir / "tap" / "tap.log").read_text()
    assert "system:serviceaccount:demo:tapper" in log_text


def test_the_tap_service_refuses_unauthenticated_and_unauthorized_callers(
    demo: LocalMeshHandle,
) -> None:
    demo.apply(TAPPER_RBAC)
    body = json.dumps({"seconds": 2})
    status, text = tap_service_call(demo, None, body)
    assert status == 401, text
    status, text = tap_service_call(demo, "not-a-token", body)
    assert status == 401, text
    intruder = demo.kubectl("create", "token", "intruder", "-n", "demo").strip()
    status, text = tap_service_call(demo, intruder, body)
    assert status == 403, text
    assert "system:serviceaccount:demo:intruder may not watch deployments/web/tap" in text
    # The tapper's right is the demo namespace's only.
    tapper = demo.kubectl("create", "token", "tapper", "-n", "demo").strip()
    other = TAP_PATH.replace("/namespaces/demo/", "/namespaces/gossamer/").replace(
        "/web/", "/destination/"
    )
    status, text = tap_service_call(demo, tapper, body, path=other)
    assert status == 403, text


def test_viz_tap_uses_the_tap_service_in_local_mode(demo: LocalMeshHandle) -> None:
    log = demo.state_dir / "tap" / "tap.log"
    before = log.read_text().count('"tap started"') if log.exists() else 0
    out = gossamer(demo, "viz", "tap", "deploy/web", "-n", "demo", "--duration", "3")
    assert [m for m in map(_REQ.match, out.splitlines()) if m], out
    after = log.read_text()
    assert after.count('"tap started"') > before
    # The CLI proved its kubeconfig's user (the client certificate's CN) to the service.
    assert '"user": "gossamer-admin"' in after
