"""Egress end to end: an EgressNetwork decides whether a meshed pod reaches the outside.

The outside world is a network namespace this test creates (``<prefix>-egress-ext``), joined
to the client pod's namespace by a veth pair on 198.51.100.0/30 (TEST-NET-2, outside every
cluster network), with an HTTP server on port 80 and a TCP echo on port 5000; no traffic
leaves the namespaces of the test. The client app's connections go through its outbound
proxy, which asks the destination for the address's policy: an ``EgressNetwork`` with
``trafficPolicy: Deny`` gets HTTP 403 with ``l5d-proxy-error`` and a refused TCP connection
(counted in ``outbound_tcp_route_close_total{error="forbidden"}``); switched to ``Allow``,
both reach the outside. A Gateway API TCPRoute whose parent is the ``Deny`` EgressNetwork
(port 5000, backendRef the EgressNetwork itself) lets that port's TCP through while HTTP
stays denied; a GRPCRoute on it (port 9090) lets one gRPC method through, and every other
call gets ``PERMISSION_DENIED``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from localmesh import LocalMeshHandle, converge, counter, echo_app
from outside_world import outside_world

pytestmark = pytest.mark.netns

NS = "mesh-egress"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gateway-api"
POD_SIDE, OUTSIDE = "198.51.100.1", "198.51.100.2"

OUTSIDE_SERVERS = r"""
import socket, sys, threading

def serve(port, answer):
    sock = socket.create_server((sys.argv[1], port))
    def loop():
        while True:
            conn, _ = sock.accept()
            with conn:
                conn.settimeout(5)
                try:
                    data = conn.recv(4096)
                    conn.sendall(answer(data))
                except OSError:
                    pass
    threading.Thread(target=loop, daemon=True).start()

serve(80, lambda d: b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\noutside")
serve(5000, lambda d: b"echo:" + d)

import concurrent.futures, grpc

class AnyMethod(grpc.GenericRpcHandler):
    def service(self, details):
        return grpc.unary_unary_rpc_method_handler(lambda request, context: b"outside:" + request)

grpc_server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
grpc_server.add_generic_rpc_handlers((AnyMethod(),))
grpc_server.add_insecure_port(f"{sys.argv[1]}:9090")
grpc_server.start()
print("ready", flush=True)
sys.stdin.read()  # until the test closes stdin
"""

CLIENT = f"""
import json, socket, urllib.error, urllib.request
out = {{}}
try:
    with urllib.request.urlopen("http://{OUTSIDE}/", timeout=10) as r:
        out["http"] = [r.status, r.read().decode(), r.headers.get("l5d-proxy-error")]
except urllib.error.HTTPError as e:
    out["http"] = [e.code, e.read().decode(), e.headers.get("l5d-proxy-error")]
except OSError as e:
    out["http"] = [0, repr(e), None]
try:
    with socket.create_connection(("{OUTSIDE}", 5000), timeout=10) as s:
        s.sendall(b"\\x00\\x01opaque hello")
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    out["tcp"] = got.decode("latin-1")
except OSError as e:
    out["tcp"] = "error:" + type(e).__name__
print(json.dumps(out))
"""


def egress_network(policy: str) -> str:
    return json.dumps(
        {
            "apiVersion": "policy.linkerd.io/v1alpha1",
            "kind": "EgressNetwork",
            "metadata": {"name": "outside", "namespace": NS},
            "spec": {"trafficPolicy": policy, "networks": [{"cidr": f"{OUTSIDE}/32"}]},
        }
    )


@pytest.fixture(scope="module")
def mesh(local_mesh: LocalMeshHandle) -> Iterator[tuple[LocalMeshHandle, dict[str, Any]]]:
    local_mesh.deploy(NS, echo_app(NS, "client", service=False), ready={"client": 1})
    (pod,) = local_mesh.pods(NS, "app=client")
    try:
        with outside_world(
            local_mesh, pod, name="egress-ext", veth="egx", pod_side=POD_SIDE, outside=OUTSIDE,
            server=OUTSIDE_SERVERS,
        ):  # fmt: skip
            yield local_mesh, pod
    finally:
        local_mesh.delete_namespace(NS)


def _attempt(mesh: LocalMeshHandle, pod: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = mesh.python_in_pod(pod, CLIENT, limit=60)
    return result


def test_egress_network_deny_blocks_and_allow_passes(
    mesh: tuple[LocalMeshHandle, dict[str, Any]],
) -> None:
    handle, pod = mesh
    handle.apply(egress_network("Deny"))

    denied = converge(
        lambda: _attempt(handle, pod),
        lambda r: r["http"][0] == 403 and not r["tcp"].startswith("echo:"),
        limit=60,
    )
    assert denied["http"][0] == 403, denied
    assert denied["http"][2] == "traffic not allowed", denied
    assert denied["tcp"] in ("", "error:ConnectionResetError"), denied
    metrics = handle.metrics(pod)
    forbidden = counter(
        metrics,
        "outbound_tcp_route_close_total",
        parent_kind="EgressNetwork",
        parent_name="outside",
        error="forbidden",
    )
    assert forbidden >= 1, metrics

    handle.apply(egress_network("Allow"))
    allowed = converge(
        lambda: _attempt(handle, pod),
        lambda r: r["http"][0] == 200 and r["tcp"].startswith("echo:"),
        limit=60,
    )
    assert allowed["http"][:2] == [200, "outside"], allowed
    assert allowed["tcp"] == "echo:\x00\x01opaque hello", allowed


TCP_ROUTE = json.dumps(
    {
        "apiVersion": "gateway.networking.k8s.io/v1alpha2",
        "kind": "TCPRoute",
        "metadata": {"name": "echo-through", "namespace": NS},
        "spec": {
            "parentRefs": [
                {
                    "group": "policy.linkerd.io",
                    "kind": "EgressNetwork",
                    "name": "outside",
                    "port": 5000,
                }
            ],
            "rules": [
                {
                    "backendRefs": [
                        {"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": "outside"}
                    ]
                }
            ],
        },
    }
)


def test_a_tcp_route_on_a_deny_egress_network_lets_its_port_through(
    mesh: tuple[LocalMeshHandle, dict[str, Any]],
) -> None:
    handle, pod = mesh
    handle.kubectl("apply", "-f", str(FIXTURES / "tcproutes.yaml"))
    handle.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/tcproutes.gateway.networking.k8s.io",
    )  # fmt: skip
    handle.apply(egress_network("Deny"))
    handle.apply(TCP_ROUTE)
    try:
        through = converge(
            lambda: _attempt(handle, pod),
            lambda r: r["http"][0] == 403 and r["tcp"].startswith("echo:"),
            limit=90,
        )
        assert through["tcp"] == "echo:\x00\x01opaque hello", through
        assert through["http"][0] == 403, through  # HTTP keeps the trafficPolicy
        assert through["http"][2] == "traffic not allowed", through
    finally:
        handle.kubectl("-n", NS, "delete", "tcproute", "echo-through", "--ignore-not-found")


GRPC_ROUTE = json.dumps(
    {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": {"name": "say-through", "namespace": NS},
        "spec": {
            "parentRefs": [
                {
                    "group": "policy.linkerd.io",
                    "kind": "EgressNetwork",
                    "name": "outside",
                    "port": 9090,
                }
            ],
            "rules": [{"matches": [{"method": {"service": "echo.Echo", "method": "Say"}}]}],
        },
    }
)

GRPC_CLIENT = f"""
import json, os
os.environ["GRPC_DNS_RESOLVER"] = "native"
import grpc
out = {{}}
with grpc.insecure_channel("{OUTSIDE}:9090") as channel:
    for method in ("Say", "Shout"):
        call = channel.unary_unary("/echo.Echo/" + method)
        try:
            out[method] = ["OK", call(b"hi", timeout=10).decode()]
        except grpc.RpcError as e:
            out[method] = [e.code().name, e.details()]
print(json.dumps(out))
"""


def test_a_grpc_route_on_a_deny_egress_network_lets_one_method_through(
    mesh: tuple[LocalMeshHandle, dict[str, Any]],
) -> None:
    handle, pod = mesh
    for path in sorted(FIXTURES.glob("*.yaml")):
        handle.kubectl("apply", "-f", str(path))
    handle.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/grpcroutes.gateway.networking.k8s.io",
    )  # fmt: skip
    handle.apply(egress_network("Deny"))
    handle.apply(GRPC_ROUTE)
    try:
        calls = converge(
            lambda: handle.python_in_pod(pod, GRPC_CLIENT, limit=60),
            lambda r: r["Say"][0] == "OK",
            limit=90,
        )
        assert calls["Say"] == ["OK", "outside:hi"], calls
        assert calls["Shout"] == ["PERMISSION_DENIED", "traffic not allowed"], calls
    finally:
        handle.kubectl("-n", NS, "delete", "grpcroute", "say-through", "--ignore-not-found")
