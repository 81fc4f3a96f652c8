"""GRPCRoute retries end to end: a Gateway API route hides an UNAVAILABLE-flaky gRPC backend.

The backend fails 30% of its calls with UNAVAILABLE. Through the client's proxy, without a
route, the client sees those failures. Then the Gateway API CRDs (test fixtures) are
installed and a ``gateway.networking.k8s.io/v1`` GRPCRoute with ``retry.linkerd.io/grpc:
unavailable`` is attached to the Service: the destination picks the CRD up without a restart,
the client's proxy retries, and at least 99% of calls succeed. The route's status says it
was accepted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from localmesh import LocalMeshHandle, converge, echo_app

pytestmark = pytest.mark.netns

NS = "mesh-grpcroute"
PORT = 9090
UNAVAILABLE_RATE = 0.3
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gateway-api"
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "flaky", "namespace": NS},
    "spec": {
        "selector": {"app": "flaky"},
        "ports": [{"name": "grpc", "port": PORT, "targetPort": PORT}],
    },
}
ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "GRPCRoute",
    "metadata": {
        "name": "flaky-rpc",
        "namespace": NS,
        "annotations": {"retry.linkerd.io/grpc": "unavailable", "retry.linkerd.io/limit": "5"},
    },
    "spec": {
        "parentRefs": [{"group": "core", "kind": "Service", "name": "flaky", "port": PORT}],
        "rules": [{"matches": [{"method": {"service": "echo.Echo"}}]}],
    },
}
CLIENT = """
import asyncio, json, os
os.environ["GRPC_DNS_RESOLVER"] = "native"
import grpc

async def main():
    ok, codes = 0, {}
    async with grpc.aio.insecure_channel("flaky.%(ns)s.svc.cluster.local:%(port)d") as channel:
        say = channel.unary_unary("/echo.Echo/Say")
        for _ in range(%(count)d):
            try:
                await say(b"hi", timeout=10)
                ok += 1
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
    print(json.dumps({"ok": ok, "codes": codes}))

asyncio.run(asyncio.wait_for(main(), 100))
"""


@pytest.fixture(scope="module")
def mesh(local_mesh: LocalMeshHandle) -> Iterator[LocalMeshHandle]:
    local_mesh.deploy(
        NS,
        echo_app(
            NS,
            "flaky",
            replicas=2,
            args=["--grpc-listen", f"0.0.0.0:{PORT}"],
            env={"GRPC_UNAVAILABLE_RATE": str(UNAVAILABLE_RATE)},
            service=False,
        ),
        yaml.safe_dump(SERVICE),
        echo_app(NS, "client", service=False),
        ready={"flaky": 2, "client": 1},
    )
    yield local_mesh
    local_mesh.delete_namespace(NS)


def calls(mesh: LocalMeshHandle, count: int) -> dict[str, Any]:
    (client,) = mesh.pods(NS, "app=client")
    code = CLIENT % {"ns": NS, "port": PORT, "count": count}
    result: dict[str, Any] = mesh.python_in_pod(client, code, limit=120)
    return result


def test_grpcroute_retry_turns_a_flaky_backend_into_99_percent_success(
    mesh: LocalMeshHandle,
) -> None:
    baseline = calls(mesh, 200)
    assert baseline["codes"].get("UNAVAILABLE", 0) >= 20, baseline  # the backend is flaky

    for path in sorted(FIXTURES.glob("*.yaml")):
        mesh.kubectl("apply", "-f", str(path))
    mesh.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/grpcroutes.gateway.networking.k8s.io",
    )  # fmt: skip
    converge(
        lambda: mesh.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(ROUTE), check=False),
        lambda out: "flaky-rpc" in out,
        limit=60,
    )

    # The destination finds the new CRD on its next look (--crd-recheck, 30 s by default).
    warm = converge(lambda: calls(mesh, 100), lambda s: s["ok"] >= 99, limit=120)
    assert warm["ok"] >= 99, f"the GRPCRoute retry never took effect: {warm}"

    summary = calls(mesh, 500)
    assert summary["ok"] / 500 >= 0.99, summary

    route = converge(
        lambda: json.loads(mesh.kubectl("get", "grpcroute", "flaky-rpc", "-n", NS, "-o", "json")),
        lambda r: bool((r.get("status") or {}).get("parents")),
        limit=30,
    )
    (parent,) = route["status"]["parents"]
    assert parent["controllerName"] == "linkerd.io/policy-controller"
    conditions = {c["type"]: c["status"] for c in parent["conditions"]}
    assert conditions == {"Accepted": "True", "ResolvedRefs": "True"}
