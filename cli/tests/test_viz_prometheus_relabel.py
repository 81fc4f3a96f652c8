"""The real Prometheus (Debian's) with local mode's config: proxy series get Linkerd's labels.

A loopback HTTP server stands in for a proxy's admin port; its file_sd target carries the
labels Kubernetes pod discovery gives a meshed pod, so this checks the relabelling itself.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from gossamer_cli.dev.prometheus import local_config
from gossamer_cli.viz import scrape

METRICS = b'request_total{direction="inbound",tls="true"} 7\n'


class ProxyAdmin(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(METRICS)))
        self.end_headers()
        self.wfile.write(METRICS)

    def log_message(self, *args: Any) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def admin() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ProxyAdmin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def pod(name: str, control_plane: str, admin_port: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "demo",
            "labels": {
                "app": "web",
                "linkerd.io/control-plane-ns": control_plane,
                "linkerd.io/proxy-deployment": "web",
                "linkerd.io/workload-ns": "demo",
            },
        },
        "spec": {
            "initContainers": [
                {
                    "name": "linkerd-proxy",
                    "ports": [{"name": "linkerd-admin", "containerPort": admin_port}],
                }
            ],
            "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 1}]}],
        },
        "status": {"podIP": "127.0.0.1", "phase": "Running"},
    }


def query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        result: list[dict[str, Any]] = json.load(response)["data"]["result"]
    return result


def test_proxy_series_carry_linkerds_labels(
    tmp_path: Path, admin: int, require_program: Callable[[str], str]
) -> None:
    targets = tmp_path / "targets.json"
    pods = [pod("web-1", "gossamer", admin), pod("other-mesh", "elsewhere", admin)]
    targets.write_text(json.dumps(scrape.pod_targets(pods)))
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(local_config(targets, "gossamer")))
    port = free_port()
    argv = [
        require_program("prometheus"), f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        series: list[dict[str, Any]] = []
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                series = query(port, "request_total")
            except OSError:
                series = []
            if series:
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        (sample,) = series  # only this control plane's proxy, only its admin port
        labels = sample["metric"]
        assert labels == {
            "__name__": "request_total",
            "job": "linkerd-proxy",
            "instance": f"127.0.0.1:{admin}",
            "direction": "inbound",
            "tls": "true",
            "namespace": "demo",
            "pod": "web-1",
            "deployment": "web",
            "app": "web",
            "control_plane_ns": "gossamer",
            "workload_ns": "demo",
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)
