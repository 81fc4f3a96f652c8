"""Pod lifecycle on a real kubelet: proxy restarts, rolling updates under load, mTLS on the wire.

These run after test_kind_mesh (file order): the control plane and the demo are up. The capture
test needs the node's network namespace (``GOSSAMER_NODE_NETNS``, set by scripts/e2e-node.sh)
and is skipped on kind, where the bridge lives inside the kind container.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Kubectl = Callable[..., str]
GetJson = Callable[..., Any]


def _wait(what: str, check: Callable[[], bool], limit: float = 180.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


def _proxy_status(get_json: GetJson, pod: str) -> dict[str, Any]:
    status = get_json("pod", pod, "-n", "demo")["status"]
    for s in status.get("initContainerStatuses", []):
        if s["name"] == "linkerd-proxy":
            return dict(s)
    raise AssertionError(f"{pod} has no linkerd-proxy status")


def _pod_ready(get_json: GetJson, pod: str) -> bool:
    conditions = get_json("pod", pod, "-n", "demo")["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_kubelet_restarts_a_proxy_that_exits(kubectl: Kubectl, get_json: GetJson) -> None:
    """The proxy is sent SIGTERM (from its own uid, inside its container) and exits after
    draining; kubelet restarts the native sidecar and the pod is Ready again with a restart
    counted."""
    pod = get_json("pods", "-n", "demo", "-l", "app=slow")["items"][0]["metadata"]["name"]
    before = _proxy_status(get_json, pod)["restartCount"]
    kubectl(
        "exec", "-n", "demo", pod, "-c", "linkerd-proxy", "--", "python", "-c",
        "import os, signal; os.kill(1, signal.SIGTERM)",
    )  # fmt: skip
    _wait("the proxy restart", lambda: _proxy_status(get_json, pod)["restartCount"] > before)
    _wait("the pod Ready again", lambda: _pod_ready(get_json, pod))


LOAD_SCRIPT = """
import sys, time, urllib.request
url = "http://web.demo.svc.cluster.local:8080/healthz"
ok = failed = 0
errors = {}
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end and ok + failed < 20000:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            r.read()
            ok += r.status == 200
            failed += r.status != 200
    except Exception as exc:
        failed += 1
        key = type(exc).__name__ + ": " + str(exc)[:80]
        errors[key] = errors.get(key, 0) + 1
    time.sleep(0.02)
print(f"ok={ok} failed={failed} errors={errors}")
"""


def test_rolling_update_under_load_fails_no_request(kubectl: Kubectl, get_json: GetJson) -> None:
    """A meshed client keeps calling the web Service while web rolls: not one request fails."""
    client = get_json("pods", "-n", "demo", "-l", "app=traffic")["items"][0]["metadata"]["name"]
    load = subprocess.Popen(
        ["kubectl", "--context", os.environ["GOSSAMER_KIND_CONTEXT"], "exec", "-n", "demo",
         client, "-c", "traffic", "--", "python", "-c", LOAD_SCRIPT, "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(5)  # requests flowing before the roll starts
        kubectl("rollout", "restart", "deploy/web", "-n", "demo")
        kubectl("rollout", "status", "deploy/web", "-n", "demo", "--timeout=180s")
        out, err = load.communicate(timeout=120)
    finally:
        load.kill()
    assert load.returncode == 0, err
    counts = dict(part.split("=", 1) for part in out.split()[:2])
    assert int(counts["ok"]) > 100, out
    assert counts["failed"] == "0", out


def _tcp_payloads_to_port(pcap: bytes, port: int) -> list[bytes]:
    """Payloads of the IPv4 TCP segments to ``port`` in an Ethernet pcap file."""
    magic = struct.unpack("<I", pcap[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    pos, payloads = 24, []
    while pos + 16 <= len(pcap):
        caplen = struct.unpack(endian + "I", pcap[pos + 8 : pos + 12])[0]
        frame = pcap[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
            continue
        ihl = (frame[14] & 0x0F) * 4
        tcp = frame[14 + ihl :]
        if len(tcp) < 20 or struct.unpack("!H", tcp[2:4])[0] != port:
            continue
        data = tcp[(tcp[12] >> 4) * 4 :]
        if data:
            payloads.append(data)
    return payloads


@pytest.mark.skipif(not os.environ.get("GOSSAMER_NODE_NETNS"), reason="needs the real node")
def test_meshed_traffic_on_the_node_bridge_is_tls() -> None:
    """Captured on the node's bridge, every segment to a proxy's inbound port (4143) is TLS:
    the demo's HTTP and gRPC never cross the wire in clear."""
    netns = os.environ["GOSSAMER_NODE_NETNS"]
    bridge = os.environ.get("GOSSAMER_NODE_BRIDGE", "gsn0")
    with tempfile.TemporaryDirectory() as tmp:
        capture = Path(tmp) / "bridge.pcap"
        subprocess.run(
            ["timeout", "30", "nsenter", f"--net=/run/netns/{netns}", "tcpdump", "-i", bridge,
             "-U", "-s", "256", "-c", "400", "-w", str(capture), "tcp dst port 4143"],
            capture_output=True, check=False, timeout=60,
        )  # fmt: skip
        payloads = _tcp_payloads_to_port(capture.read_bytes(), 4143)
    assert len(payloads) >= 10, "no meshed traffic captured on the bridge"
    plaintext = [p[:24] for p in payloads if p[:4] in (b"GET ", b"POST", b"PRI ", b"HTTP")]
    assert not plaintext, plaintext[:3]
    # TLS 1.3 application data records (segments may also start mid-record)
    assert any(p[:3] == b"\x17\x03\x03" for p in payloads), [p[:8] for p in payloads[:5]]


def test_non_native_sidecar_mode_holds_the_app_until_the_proxy_is_ready(
    kubectl: Kubectl, get_json: GetJson
) -> None:
    """With native sidecars off, the proxy is the first container and its postStart hook
    (gossamer-await) holds the app until the proxy is ready; the pod ends up Ready."""
    image = get_json("deploy", "web", "-n", "demo")["spec"]["template"]["spec"]["containers"][0][
        "image"
    ]
    name = "await-probe"
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "demo",
            "annotations": {"config.alpha.linkerd.io/proxy-enable-native-sidecar": "false"},
        },
        "spec": {
            "containers": [
                {"name": "app", "image": image,
                 "command": ["python", "-c", "import time; time.sleep(3600)"]},
            ],
            "terminationGracePeriodSeconds": 1,
        },
    }  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".json") as fh:
        json.dump(manifest, fh)
        fh.flush()
        kubectl("apply", "-f", fh.name)
    try:
        _wait("the await-probe pod Ready", lambda: _pod_ready(get_json, name))
        pod = get_json("pod", name, "-n", "demo")
        containers = pod["spec"]["containers"]
        assert [c["name"] for c in containers] == ["linkerd-proxy", "app"]
        hook = containers[0]["lifecycle"]["postStart"]["exec"]["command"]
        assert hook[0] == "gossamer-await"
        events = kubectl("get", "events", "-n", "demo", "--field-selector",
                         f"involvedObject.name={name}", "-o", "json")  # fmt: skip
        reasons = {e["reason"] for e in json.loads(events)["items"]}
        assert "FailedPostStartHook" not in reasons, reasons
    finally:
        kubectl("delete", "pod", name, "-n", "demo", "--ignore-not-found", "--wait=true")
