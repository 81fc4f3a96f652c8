"""On kind: the chart's control plane runs meshed, the demo is injected and talks over mTLS."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from gossamer_cli.main import cli

COMPONENTS = ("gossamer-identity", "gossamer-destination", "gossamer-proxy-injector")


def test_control_plane_deployments_are_available(
    get_json: Callable[..., Any], control_plane_namespace: str
) -> None:
    for name in COMPONENTS:
        d = get_json("deploy", name, "-n", control_plane_namespace)
        assert d["status"].get("readyReplicas") == d["spec"]["replicas"], name


def test_control_plane_pods_carry_their_own_proxy(
    get_json: Callable[..., Any], control_plane_namespace: str
) -> None:
    pods = get_json("pods", "-n", control_plane_namespace,
                    "-l", "linkerd.io/control-plane-component")["items"]  # fmt: skip
    assert pods
    for pod in pods:
        names = [c["name"] for c in pod["spec"].get("initContainers", [])]
        names += [c["name"] for c in pod["spec"]["containers"]]
        assert "linkerd-proxy" in names, pod["metadata"]["name"]


def test_demo_pods_are_injected(get_json: Callable[..., Any]) -> None:
    pods = get_json("pods", "-n", "demo")["items"]
    assert pods
    for pod in pods:
        init = [c["name"] for c in pod["spec"].get("initContainers", [])]
        assert init[:2] == ["linkerd-init", "linkerd-proxy"], pod["metadata"]["name"]
        assert pod["metadata"]["annotations"]["linkerd.io/created-by"].startswith(
            "gossamer/proxy-injector "
        )


def test_check_with_proxies_passes(context: str, control_plane_namespace: str) -> None:
    subprocess.run(["kubectl", "config", "use-context", context], check=True, timeout=30)
    result = CliRunner().invoke(
        cli, ["check", "--proxy", "-L", control_plane_namespace, "-n", "demo"]
    )
    assert result.exit_code == 0, result.output


def test_meshed_traffic_is_mtls(kubectl: Callable[..., str], get_json: Callable[..., Any]) -> None:
    """The web pod's proxy reports inbound requests from the traffic client over mTLS."""
    pod = get_json("pods", "-n", "demo", "-l", "app=web")["items"][0]["metadata"]["name"]
    path = f"/api/v1/namespaces/demo/pods/{pod}:4191/proxy/metrics"
    deadline = time.monotonic() + 120
    while True:
        metrics = kubectl("get", "--raw", path, check=False)
        lines = [
            line for line in metrics.splitlines()
            if line.startswith("request_total{") and 'direction="inbound"' in line
            and 'tls="true"' in line
        ]  # fmt: skip
        if lines or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert lines, "no inbound mTLS requests on the web pod's proxy"


PROBE_SCRIPT = """
import urllib.request
ok = 0
for _ in range(20):
    with urllib.request.urlopen("http://web.demo.svc.cluster.local:8080/healthz", timeout=5) as r:
        ok += r.status == 200
print(f"ok={ok}")
"""


def test_cluster_ip_service_through_kube_proxy(
    kubectl: Callable[..., str], get_json: Callable[..., Any]
) -> None:
    """An unmeshed pod reaches the web Service by its DNS name and ClusterIP: cluster DNS,
    kube-proxy's rules and the web pod's inbound proxy, all real."""
    image = get_json("deploy", "web", "-n", "demo")["spec"]["template"]["spec"]["containers"][0][
        "image"
    ]
    name = "cluster-ip-probe"
    kubectl("delete", "pod", name, "-n", "default", "--ignore-not-found", "--wait=true")
    kubectl(
        "run", name, "-n", "default", "--restart=Never", f"--image={image}",
        "--annotations=linkerd.io/inject=disabled", "--command", "--",
        "python", "-c", PROBE_SCRIPT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        phase = ""
        while time.monotonic() < deadline:
            phase = get_json("pod", name, "-n", "default")["status"].get("phase", "")
            if phase in ("Succeeded", "Failed"):
                break
            time.sleep(1)
        logs = kubectl("logs", name, "-n", "default", check=False)
        assert phase == "Succeeded", logs
        assert "ok=20" in logs
    finally:
        kubectl("delete", "pod", name, "-n", "default", "--ignore-not-found", "--wait=false")


def test_check_through_an_exec_plugin_kubeconfig(
    kubectl: Callable[..., str], control_plane_namespace: str, tmp_path: Path
) -> None:
    """A managed-cluster style kubeconfig (user: exec plugin printing an ExecCredential with a
    service-account token) works for `gossamer check`."""
    kubectl("create", "serviceaccount", "exec-plugin-check", "-n", "default")
    kubectl("create", "clusterrolebinding", "exec-plugin-check", "--clusterrole=cluster-admin",
            "--serviceaccount=default:exec-plugin-check")  # fmt: skip
    try:
        token = kubectl("create", "token", "exec-plugin-check", "-n", "default").strip()
        current = json.loads(kubectl("config", "view", "--minify", "--raw", "-o", "json"))
        plugin = tmp_path / "token-plugin.py"
        credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                      "status": {"token": token}}  # fmt: skip
        plugin.write_text(f"#!{sys.executable}\nprint({json.dumps(json.dumps(credential))})\n")
        plugin.chmod(0o700)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "exec",
            "clusters": [{"name": "c", "cluster": current["clusters"][0]["cluster"]}],
            "users": [{"name": "u", "user": {"exec": {
                "apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin)}}}],
            "contexts": [{"name": "exec", "context": {"cluster": "c", "user": "u"}}],
        }  # fmt: skip
        path = tmp_path / "kubeconfig"
        path.write_text(json.dumps(config))
        result = CliRunner().invoke(
            cli, ["check", "-L", control_plane_namespace, "--kubeconfig", str(path)]
        )
        assert result.exit_code == 0, result.output
    finally:
        kubectl("delete", "clusterrolebinding", "exec-plugin-check", "--ignore-not-found")
        kubectl("delete", "serviceaccount", "exec-plugin-check", "-n", "default",
                "--ignore-not-found")  # fmt: skip
