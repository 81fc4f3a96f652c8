"""The viz dashboard against a loopback stand-in for Prometheus's HTTP API (no browser):
the pages and their JSON twins, escaping, and the refusals (bad names, foreign Host)."""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import threading
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from gossamer_cli.viz.kubeobjects import KubeView
from gossamer_cli.viz.promapi import PrometheusClient
from gossamer_cli.viz.web import guard, pages
from gossamer_cli.viz.web.data import DashboardData
from gossamer_cli.viz.web.httpio import BadRequestError, parse_head
from gossamer_cli.viz.web.server import Dashboard, serve

HOSTILE = '<script>alert("x")</script>'
IDENTITY = "{}.demo.serviceaccount.identity.gossamer.cluster.local"


def vector(*series: tuple[dict[str, str], str]) -> dict[str, Any]:
    result = [{"metric": m, "value": [1.0, v]} for m, v in series]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def answer(promql: str) -> dict[str, Any]:
    """Canned series: web and slow serve in demo; web calls slow; a hostile label value."""
    ok, fail = {"classification": "success"}, {"classification": "failure"}
    if promql.startswith("sum(increase(response_total"):
        if "by (namespace, classification)" in promql:
            return vector(
                ({"namespace": "demo", **ok}, "600"), ({"namespace": "demo", **fail}, "60")
            )
        if 'dst_deployment="slow"' in promql:  # callers of slow
            return vector(({"namespace": "demo", "deployment": "web", **ok}, "120"))
        if 'direction="outbound"' in promql and 'deployment="web"' in promql:  # web's calls
            return vector(({"dst_namespace": "demo", "dst_deployment": "slow", **ok}, "120"))
        if "by (namespace, deployment" in promql:
            return vector(
                ({"namespace": "demo", "deployment": "web", **ok}, "570"),
                ({"namespace": "demo", "deployment": "web", **fail}, "30"),
                ({"namespace": "demo", "deployment": "slow", **ok}, "120"),
            )
        if "by (namespace, pod" in promql and 'deployment="slow"' in promql:
            return vector(({"namespace": "demo", "pod": "slow-1", **ok}, "120"))
        if "by (namespace, pod" in promql:
            return vector(
                ({"namespace": "demo", "pod": "web-abc12", **ok}, "600"),
                ({"namespace": "demo", "pod": HOSTILE, **ok}, "60"),
            )
    if promql.startswith("histogram_quantile(0.5,") and "by (le, namespace, deployment)" in promql:
        return vector(({"namespace": "demo", "deployment": "slow"}, "152"))
    if promql.startswith("sum(tcp_open_total") and 'direction="outbound"' in promql:
        labels = {"namespace": "demo", "dst_namespace": "demo", "tls": "true"}
        return vector(
            ({**labels, "deployment": "web", "dst_deployment": "slow",
              "server_id": IDENTITY.format("slow")}, "3"),
            ({**labels, "deployment": "traffic", "dst_deployment": "web",
              "server_id": IDENTITY.format("web")}, "1"),
            ({"namespace": "demo", "dst_namespace": "demo", "tls": "no_identity",
              "deployment": "web", "dst_deployment": "legacy",
              "no_tls_reason": "not_provided_by_service_discovery"}, "1"),
        )  # fmt: skip
    if promql.startswith("sum(tcp_open_total") and 'direction="inbound"' in promql:
        slow = {"namespace": "demo", "deployment": "slow", "client_id": IDENTITY.format("web")}
        web = {"namespace": "demo", "deployment": "web", "client_id": IDENTITY.format("traffic")}
        return vector((slow, "3"), (web, "1"))
    return vector()


class FakePrometheus(http.server.BaseHTTPRequestHandler):
    queries: list[str] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        promql = urllib.parse.parse_qs(self.rfile.read(length).decode())["query"][0]
        self.queries.append(promql)
        body = json.dumps(answer(promql)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[str]:
    FakePrometheus.queries = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def pod(name: str, deployment: str, meshed: bool = True) -> dict[str, Any]:
    containers = [{"name": "app"}] + ([{"name": "linkerd-proxy"}] if meshed else [])
    return {
        "metadata": {
            "name": name,
            "namespace": "demo",
            "labels": {"pod-template-hash": "5d9f"},
            "ownerReferences": [
                {"kind": "ReplicaSet", "name": f"{deployment}-5d9f", "controller": True}
            ],
        },
        "spec": {"containers": containers},
        "status": {"phase": "Running"},
    }


async def fake_kube(kinds: Sequence[str], namespace: str | None) -> KubeView:
    pods = [pod("web-abc12", "web"), pod("slow-1", "slow"), pod("slow-2", "slow", meshed=False)]
    known = {
        "namespace": [("", "demo"), ("", "quiet")],
        "deployment": [("demo", "web"), ("demo", "slow"), ("demo", "traffic")],
        "pod": [("demo", p["metadata"]["name"]) for p in pods],
    }
    return KubeView({k: v for k, v in known.items() if k in kinds}, pods)


@pytest.fixture
async def dashboard(prometheus: str) -> AsyncIterator[int]:
    data = DashboardData(PrometheusClient(prometheus), fake_kube)
    pattern = guard.compile_host_pattern(guard.enforced_host_pattern(("web.gossamer-viz.svc",)))
    server = await serve(Dashboard(data, pattern, clock=lambda: "now"), "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def get(
    port: int, path: str, host: str | None = "localhost", raw: bytes = b""
) -> tuple[int, dict[str, str], str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        raw
        or (f"GET {path} HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host else "") + "\r\n").encode()
    )
    writer.write(head)
    reply = await reader.read()
    writer.close()
    head_text, _, body = reply.partition(b"\r\n\r\n")
    lines = head_text.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body.decode()


def cells(page: str, table: str) -> dict[str, dict[str, str]]:
    """{row name: {column: text}} of the table with id ``table``."""
    body = page.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    found = {}
    for name, row in re.findall(r'<tr data-name="([^"]*)">(.*?)</tr>', body):
        columns = dict(re.findall(r'<td class="(\w+)[^"]*">(?:<a [^>]*>)?(.*?)(?:</a>)?</td>', row))
        found[name] = columns
    return found


async def test_namespaces_page_lists_namespaces_with_their_figures(dashboard: int) -> None:
    status, headers, page = await get(dashboard, "/namespaces")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    rows = cells(page, "namespaces")
    assert set(rows) == {"demo", "quiet"}
    assert rows["demo"]["success"] == "90.91%"
    assert rows["demo"]["rps"] == "11.0rps"
    assert rows["demo"]["meshed"] == "2/3"
    assert rows["quiet"]["rps"] == "-"
    assert '<a href="/namespaces/demo">demo</a>' in page
    assert (await get(dashboard, "/"))[0] == 302


async def test_namespace_page_shows_deployments_and_pods(dashboard: int) -> None:
    status, _, page = await get(dashboard, "/namespaces/demo")
    assert status == 200
    deployments = cells(page, "deployments")
    assert set(deployments) == {"web", "slow", "traffic"}
    assert deployments["web"] | {} == {
        "name": "web", "meshed": "1/1", "success": "95.00%", "rps": "10.0rps",
        "p50": "-", "p95": "-", "p99": "-", "tcp": "-",
    }  # fmt: skip
    assert deployments["slow"]["meshed"] == "1/2"
    assert deployments["slow"]["p50"] == "152ms"
    assert deployments["traffic"]["rps"] == "-"
    pods = cells(page, "pods")
    assert pods["web-abc12"]["rps"] == "10.0rps"
    assert '<a href="/namespaces/demo/deployments/web">web</a>' in page


async def test_label_values_from_prometheus_are_escaped(dashboard: int) -> None:
    _, _, page = await get(dashboard, "/namespaces/demo")
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "<script" not in page


async def test_deployment_detail_shows_pods_callers_and_calls(dashboard: int) -> None:
    status, _, page = await get(dashboard, "/namespaces/demo/deployments/slow")
    assert status == 200
    assert cells(page, "resource")["slow"]["meshed"] == "1/2"
    assert set(cells(page, "pods")) == {"slow-1", "slow-2"}
    assert cells(page, "inbound")["web"]["rps"] == "2.0rps"
    assert cells(page, "inbound")["web"]["meshed"] == "1/1"
    _, _, web = await get(dashboard, "/namespaces/demo/deployments/web")
    assert cells(web, "outbound")["slow"]["rps"] == "2.0rps"
    status, _, body = await get(dashboard, "/api/namespaces/demo/deployments/web")
    detail = json.loads(body)
    assert detail["resource"]["rps"] == 10.0
    assert [r["name"] for r in detail["outbound"]] == ["slow"]
    assert (await get(dashboard, "/namespaces/demo/deployments/nothere"))[0] == 404


async def test_edges_page_draws_the_graph_and_lists_identities(dashboard: int) -> None:
    status, _, page = await get(dashboard, "/namespaces/demo/edges")
    assert status == 200
    lines = re.findall(
        r'<line class="edge" data-src="(\w+)" data-dst="(\w+)" data-secured="(\w+)"', page
    )
    assert sorted(lines) == [
        ("traffic", "web", "true"),
        ("web", "legacy", "false"),
        ("web", "slow", "true"),
    ]
    nodes = re.findall(r'<g class="node" data-name="(\w+)">', page)
    assert sorted(nodes) == ["legacy", "slow", "traffic", "web"]
    assert IDENTITY.format("web") in page
    # Columns follow the calls: traffic, then web, then what web calls.
    x = {
        n: int(v) for n, v in re.findall(r'<g class="node" data-name="(\w+)"><rect x="(\d+)"', page)
    }
    assert x["traffic"] < x["web"] < x["slow"] == x["legacy"]
    _, headers, body = await get(dashboard, "/api/namespaces/demo/edges")
    assert headers["Content-Type"] == "application/json"
    assert {(e["src"], e["dst"]) for e in json.loads(body)} == {
        ("traffic", "web"), ("web", "slow"), ("web", "legacy"),
    }  # fmt: skip


async def test_json_endpoints_mirror_the_tables(dashboard: int) -> None:
    _, _, body = await get(dashboard, "/api/namespaces/demo/deployments")
    rows = {r["name"]: r for r in json.loads(body)}
    assert rows["web"]["success"] == 0.95
    assert rows["web"]["meshed"] == "1/1"
    _, _, body = await get(dashboard, "/api/namespaces")
    assert {r["name"] for r in json.loads(body)} == {"demo", "quiet"}


@pytest.mark.parametrize(
    "path",
    [
        "/namespaces/Demo",
        '/namespaces/demo"}or{x="',
        "/namespaces/demo%22%7D",
        "/namespaces/-demo/deployments/web",
        "/namespaces/demo/deployments/web%0aevil",
        "/namespaces/demo/pods/" + "a" * 254,
        "/api/namespaces/demo/deployments/we_b",
        "/namespaces/" + "a" * 64,
    ],
)
async def test_invalid_names_are_refused_before_any_query(dashboard: int, path: str) -> None:
    status, _, body = await get(dashboard, path)
    assert status == 400
    assert "invalid" in body
    assert FakePrometheus.queries == []


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:8084", "localhost.evil.example", "127.0.0.1.nip.io:80",
     "web.gossamer-viz.svc.evil", "localhost:80x"],
)  # fmt: skip
async def test_foreign_host_headers_are_refused(dashboard: int, host: str | None) -> None:
    status, headers, body = await get(dashboard, "/namespaces", host=host)
    assert status == 403
    assert "host not allowed" in body
    assert FakePrometheus.queries == []
    assert not any(k.lower().startswith("access-control") for k in headers)


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:50750", "127.0.0.1:8084", "[::1]:50750", "web.gossamer-viz.svc"],
)
async def test_local_and_service_hosts_are_served(dashboard: int, host: str) -> None:
    status, headers, _ = await get(dashboard, "/namespaces", host=host)
    assert status == 200
    assert "script-src" not in headers["Content-Security-Policy"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert not any(k.lower().startswith("access-control") for k in headers)


async def test_missing_or_repeated_host_header_is_refused(dashboard: int) -> None:
    # HTTP/1.1 requires exactly one Host (the parser refuses others); HTTP/1.0 may omit it,
    # and then matches no allowed name.
    raw = b"GET /namespaces HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n"
    status, _, body = await get(dashboard, "", raw=raw)
    assert (status, body) == (400, "more than one Host header\n")
    status, _, body = await get(dashboard, "", raw=b"GET /namespaces HTTP/1.1\r\n\r\n")
    assert (status, body) == (400, "missing Host header\n")
    status, _, body = await get(dashboard, "", raw=b"GET /namespaces HTTP/1.0\r\n\r\n")
    assert status == 403
    assert "host not allowed" in body
    assert FakePrometheus.queries == []


async def test_malformed_and_oversized_requests(dashboard: int) -> None:
    assert (await get(dashboard, "", raw=b"GARBAGE\r\n\r\n"))[0] == 400
    big = b"GET / HTTP/1.1\r\nHost: localhost\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
    assert (await get(dashboard, "", raw=big))[0] == 431
    post = b"POST /namespaces HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
    assert (await get(dashboard, "", raw=post))[0] == 405
    body = b"GET /namespaces HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello"
    assert (await get(dashboard, "", raw=body))[0] == 413


async def test_probe_path_answers_any_host(dashboard: int) -> None:
    assert (await get(dashboard, "/ready", host="10.244.1.7:8084"))[0] == 200


async def test_prometheus_down_is_a_clear_error_page() -> None:
    data = DashboardData(PrometheusClient("http://127.0.0.1:1", timeout=2), None)
    pattern = guard.compile_host_pattern(guard.enforced_host_pattern())
    server = await serve(Dashboard(data, pattern), "127.0.0.1", 0)
    async with server:
        status, _, page = await get(server.sockets[0].getsockname()[1], "/namespaces")
    assert status == 502
    assert "cannot reach Prometheus" in page


def test_name_rules_follow_kubernetes() -> None:
    assert guard.namespace_name("gossamer-viz") == "gossamer-viz"
    assert guard.resource_name("web-5d9f-abc12") == "web-5d9f-abc12"
    assert guard.resource_name("a.b-c") == "a.b-c"
    for bad in ("", "A", "a_b", "a.b", "-a", "a-", "a" * 64, "a\n"):
        with pytest.raises(guard.BadNameError):
            guard.namespace_name(bad)
    for bad in ("", "a..b", ".a", "a/b", "a" * 254, 'a"'):
        with pytest.raises(guard.BadNameError):
            guard.resource_name(bad)


def test_request_head_parsing_refuses_what_it_cannot_trust() -> None:
    request = parse_head(b"GET /namespaces/demo?x=1 HTTP/1.1\r\nHost: localhost:50750\r\n\r\n")
    assert request is not None
    assert (request.path, request.query, request.header("host")) == (
        "/namespaces/demo", {"x": "1"}, "localhost:50750",
    )  # fmt: skip
    assert parse_head(b"GET / HTTP/1.1\r\nHost: local") is None  # more bytes needed
    for bad, status in (
        (b"GET http://evil/ HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/2\r\n\r\n", 505),
        (b"GET /%ff HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx", 413),
        ("GET /é HTTP/1.1\r\n\r\n".encode(), 400),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
    ):
        with pytest.raises(BadRequestError) as refused:
            parse_head(bad)
        assert refused.value.status == status, bad


def test_page_text_is_escaped_everywhere() -> None:
    page = pages.message_page(HOSTILE, HOSTILE, now=HOSTILE)
    assert "<script" not in page
    assert pages.href("namespaces", 'a"b<c') == "/namespaces/a%22b%3Cc"
