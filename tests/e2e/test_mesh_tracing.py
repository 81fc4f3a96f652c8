"""Distributed tracing on the local mesh: injected proxies (uid 2102, iptables) export spans.

The namespace carries ``config.linkerd.io/trace-collector`` naming an OTLP/gRPC receiver
run by this test in the node namespace, so the injector gives every proxy its
``LINKERD2_PROXY_TRACE_*`` variables. A client pod calls the echo server with a sampled
``traceparent``: the client's proxy reports a CLIENT span (the app's span its parent), the
server's proxy a SERVER span (the CLIENT span its parent), both under the client's trace id,
with the workloads' names as ``service.name`` and the pod labels as resource attributes; the
app sees the server proxy's span as its parent.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from localmesh import RUNTIME_VENV, LocalMeshHandle, echo_app, fetch_code, service_url

pytestmark = pytest.mark.netns

NS = "mesh-tracing"
PORT = 14317
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
APP_SPAN = "00f067aa0ba902b7"

#: The receiver, run with the runtime venv's Python in the node namespace: every exported
#: span as one JSON line on stdout.
RECEIVER = """
import asyncio, json, sys
from grpclib.server import Server
from gossamer_api.proxy.otlp_trace_service_grpc import TraceServiceBase
from gossamer_api.proxy.otlp_trace_service_pb2 import ExportTraceServiceResponse

class Receiver(TraceServiceBase):
    async def Export(self, stream):
        request = await stream.recv_message()
        for rs in request.resource_spans:
            resource = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    print(json.dumps({
                        "service": resource.get("service.name"), "resource": resource,
                        "trace": s.trace_id.hex(), "span": s.span_id.hex(),
                        "parent": s.parent_span_id.hex(), "kind": s.kind, "name": s.name,
                    }), flush=True)
        await stream.send_message(ExportTraceServiceResponse())

async def main():
    server = Server([Receiver()])
    await server.start(sys.argv[1], int(sys.argv[2]))
    print(json.dumps({"listening": True}), flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def receiver(local_mesh: LocalMeshHandle) -> Iterator[subprocess.Popen[bytes]]:
    argv = [
        "ip", "netns", "exec", local_mesh.layout.node_netns,
        str(RUNTIME_VENV / "bin" / "python"), "-c", RECEIVER,
        local_mesh.layout.node_address, str(PORT),
    ]  # fmt: skip
    # Unbuffered bytes: a buffered reader could take two span lines in one read, and the
    # selector in _spans would then wait on a pipe with nothing left in it.
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    assert process.stdout is not None
    first = process.stdout.readline()  # the line it prints once listening, or EOF if it died
    if not first:
        assert process.stderr is not None
        raise AssertionError(
            f"the receiver did not start: {process.stderr.read()[-2000:].decode(errors='replace')}"
        )
    assert json.loads(first) == {"listening": True}
    yield process
    process.kill()
    process.wait(10)


@pytest.fixture(scope="module")
def mesh(
    local_mesh: LocalMeshHandle, receiver: subprocess.Popen[bytes]
) -> Iterator[LocalMeshHandle]:
    collector = f"{local_mesh.layout.node_address}:{PORT}"
    local_mesh.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n"
        f"  name: {NS}\n  annotations:\n    linkerd.io/inject: enabled\n"
        f"    config.linkerd.io/trace-collector: {collector}\n"
    )
    local_mesh.apply(echo_app(NS, "server"))
    local_mesh.apply(echo_app(NS, "client", service=False))
    for app in ("server", "client"):
        local_mesh.wait_ready(NS, f"app={app}", 1, limit=180)
    yield local_mesh
    local_mesh.delete_namespace(NS)


def _spans(
    receiver: subprocess.Popen[bytes], count: int, limit: float = 60
) -> list[dict[str, Any]]:
    """Read span lines until ``count`` of the test's trace arrived (batches go out in 5 s)."""
    assert receiver.stdout is not None
    spans: list[dict[str, Any]] = []
    deadline = time.monotonic() + limit
    selector = selectors.DefaultSelector()
    selector.register(receiver.stdout, selectors.EVENT_READ)
    while len(spans) < count and time.monotonic() < deadline:
        if selector.select(timeout=deadline - time.monotonic()):
            line = receiver.stdout.readline()
            if not line:
                break
            span = json.loads(line)
            if span["trace"] == TRACE:
                spans.append(span)
    return spans


def test_a_sampled_request_gives_a_client_and_a_server_span(
    mesh: LocalMeshHandle, receiver: subprocess.Popen[bytes]
) -> None:
    (client,) = mesh.pods(NS, "app=client")
    traceparent = f"00-{TRACE}-{APP_SPAN}-01"
    code = fetch_code(service_url(NS, "server", "/traced"), headers={"traceparent": traceparent})
    answer = mesh.python_in_pod(client, code)
    assert answer["status"] == 200, answer
    spans = {s["service"]: s for s in _spans(receiver, 2)}
    assert set(spans) == {"client", "server"}, spans
    out, inbound = spans["client"], spans["server"]
    assert (out["kind"], inbound["kind"]) == (3, 2)  # CLIENT, SERVER
    assert out["parent"] == APP_SPAN
    assert inbound["parent"] == out["span"]
    assert inbound["name"] == "/traced"
    assert inbound["resource"]["app"] == "server"  # the pod's labels, from the downward API
    body = json.loads(answer["body"])
    assert body["traceparent"] == f"00-{TRACE}-{inbound['span']}-01"
    assert body["client_id"]  # the hop between the proxies was mTLS
