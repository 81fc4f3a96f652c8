"""Driving a running local mesh from tests: kubectl, commands inside pods, proxy metrics.

The mesh runs as ``gossamer dev up --headless`` in its own node network namespace; tests
reach it only through ``ip netns exec`` (kubectl in the node namespace, clients inside pod
namespaces), so nothing here ever touches the host's network.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gossamer_cli.dev.layout import NodeLayout

RUNTIME_VENV = Path(os.environ.get("GOSSAMER_RUNTIME_VENV", "/opt/gossamer/runtime"))
CLIENT_UID = 2300  # a test client inside a pod: neither the proxy (2102) nor the app (2200)


@dataclass
class LocalMeshHandle:
    process: subprocess.Popen[bytes]
    state_dir: Path
    layout: NodeLayout
    kubeconfig: str
    log: Path

    # -- kubectl ---------------------------------------------------------------------------

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        argv = [
            "ip", "netns", "exec", self.layout.node_netns,
            "kubectl", "--kubeconfig", self.kubeconfig, *args,
        ]  # fmt: skip
        out = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120)
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def apply(self, manifest: str) -> None:
        self.kubectl("apply", "-f", "-", stdin=manifest)

    def get(self, kind: str, name: str = "", namespace: str = "default") -> Any:
        args = ["get", kind] + ([name] if name else []) + ["-n", namespace, "-o", "json"]
        return json.loads(self.kubectl(*args))

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("pods", "", namespace)["items"]
        key, _, value = selector.partition("=")
        return [p for p in items if (p["metadata"].get("labels") or {}).get(key) == value]

    def wait_ready(
        self, namespace: str, selector: str, count: int, limit: float = 120.0
    ) -> list[dict[str, Any]]:
        """Exactly ``count`` pods match, all Ready (and none terminating)."""
        deadline = time.monotonic() + limit
        pods: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            self.check_alive()
            pods = self.pods(namespace, selector)
            ready = [p for p in pods if is_ready(p) and not p["metadata"].get("deletionTimestamp")]
            if len(ready) == count and len(pods) == count:
                return ready
            time.sleep(0.5)
        summary = [(p["metadata"]["name"], (p.get("status") or {}).get("phase")) for p in pods]
        raise AssertionError(f"{namespace}/{selector}: wanted {count} ready pods, have {summary}")

    # -- inside pods -----------------------------------------------------------------------

    def pod_netns(self, pod: dict[str, Any]) -> str:
        return self.layout.pod_netns(pod["metadata"]["uid"])

    def run_in_pod(
        self, pod: dict[str, Any], argv: Sequence[str], *, uid: int = CLIENT_UID, limit: float = 120
    ) -> subprocess.CompletedProcess[str]:
        full = [
            "ip", "netns", "exec", self.pod_netns(pod),
            "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv,
        ]  # fmt: skip
        return subprocess.run(full, capture_output=True, text=True, timeout=limit)

    def python_in_pod(self, pod: dict[str, Any], code: str, *, limit: float = 120) -> Any:
        """Run ``code`` with the runtime venv's Python inside the pod; it prints one JSON value."""
        out = self.run_in_pod(pod, [str(RUNTIME_VENV / "bin" / "python"), "-c", code], limit=limit)
        if out.returncode != 0:
            raise AssertionError(f"in-pod client failed ({out.returncode}): {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def node_curl(self, url: str) -> str:
        argv = ["ip", "netns", "exec", self.layout.node_netns, "curl", "-sS", "-m", "5", url]
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout

    def metrics(self, pod: dict[str, Any]) -> str:
        return self.node_curl(f"http://{pod['status']['podIP']}:4191/metrics")

    # -- lifecycle -------------------------------------------------------------------------

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"the local mesh exited:\n{self.log.read_text()[-3000:]}")

    def stop(self, limit: float = 90) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def start_local_mesh(state_dir: Path, prefix: str, image_maps: Sequence[Path]) -> LocalMeshHandle:
    layout = NodeLayout(prefix=prefix)
    log = state_dir.parent / f"{prefix}-mesh.log"
    argv = [
        sys.executable, "-m", "gossamer_cli.main", "dev", "up", "--headless",
        "--state-dir", str(state_dir), "--prefix", prefix, "--duration", "3000",
    ]  # fmt: skip
    for path in image_maps:
        argv += ["--images", str(path)]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    ready = state_dir / "ready.json"
    deadline = time.monotonic() + 180
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"local mesh did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    info = json.loads(ready.read_text())
    return LocalMeshHandle(process, state_dir, layout, info["kubeconfig"], log)
