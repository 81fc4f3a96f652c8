"""`gossamer viz tap` and `viz top` on the local mesh: the demo's real proxies, tapped over mTLS."""

from __future__ import annotations

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
