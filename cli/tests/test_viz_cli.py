"""The `gossamer viz` commands against a loopback stand-in for Prometheus's HTTP API."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from gossamer_cli.main import cli

WEB = {"namespace": "demo", "deployment": "web"}


def vector(*series: tuple[dict[str, str], str]) -> dict[str, Any]:
    result = [{"metric": m, "value": [1.0, v]} for m, v in series]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def answer(promql: str) -> dict[str, Any]:
    if promql.startswith("sum(increase(response_total"):
        return vector(({**WEB, "classification": "success"}, "120"))
    if promql.startswith("histogram_quantile(0.5,"):
        return vector((WEB, "3"))
    if promql.startswith("sum(tcp_open_connections"):
        return vector((WEB, "2"))
    if promql.startswith("up{"):
        return vector(({"namespace": "demo", "pod": "web-1"}, "1"))
    if "bad" in promql:
        return {"status": "error", "errorType": "bad_data", "error": "parse error"}
    return vector()


class FakePrometheus(http.server.BaseHTTPRequestHandler):
    queries: list[str] = []

    def do_GET(self) -> None:
        self._reply(200, b"Prometheus Server is Ready.\n" if self.path == "/-/ready" else b"")

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        promql = form["query"][0]
        self.queries.append(promql)
        self._reply(200, json.dumps(answer(promql)).encode())

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def viz(url: str, *args: str) -> Any:
    # An unreadable kubeconfig: the figures still come, with a warning and no MESHED.
    env = {"GOSSAMER_PROMETHEUS_URL": url, "KUBECONFIG": "/nonexistent/kubeconfig"}
    return CliRunner().invoke(cli, ["viz", *args], env=env)


def test_stat_prints_figures_without_kubernetes(prometheus: str) -> None:
    result = viz(prometheus, "stat", "deploy", "-n", "demo")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if not line.startswith("warning")]
    assert lines[1].split() == ["web", "-", "100.00%", "2.0rps", "3ms", "-", "-", "2"]
    assert "MESHED unknown" in result.output


def test_check_passes_when_every_proxy_is_scraped(prometheus: str) -> None:
    result = viz(prometheus, "check")
    assert result.exit_code == 0, result.output
    assert "\u221a prometheus scrapes every proxy" in result.output


def test_unreachable_prometheus_is_a_clear_error() -> None:
    result = viz("http://127.0.0.1:1", "stat", "deploy")
    assert result.exit_code == 1
    assert "cannot reach Prometheus at http://127.0.0.1:1" in result.output
    bad = viz("file:///etc/passwd", "stat", "deploy")
    assert bad.exit_code == 2
    assert "must be http:// or https://" in bad.output


def test_bad_resource_and_flags_are_refused(prometheus: str) -> None:
    unknown = viz(prometheus, "stat", "bogus")
    assert unknown.exit_code == 2
    assert "unknown resource type 'bogus'" in unknown.output
    both = viz(prometheus, "stat", "deploy", "--from", "deploy/a", "--to", "deploy/b")
    assert both.exit_code == 2
    assert "cannot be combined" in both.output
