"""mTLS end to end: the server's proxy names the client's identity, the wire carries no plaintext.

A meshed client pod calls a meshed echo server through both proxies. The server-side proxy
must count the requests as ``tls="true"`` with the client's ServiceAccount identity and hand
the app ``l5d-client-id``; a packet capture on the server pod's veth (in the node namespace,
outside both pods) must not contain a marker string the client sent and the app echoed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from localmesh import (
    LocalMeshHandle,
    counter,
    echo_app,
    fetch_code,
    identity,
    service_url,
)

pytestmark = pytest.mark.netns

NS = "mesh-mtls"


@pytest.fixture(scope="module")
def mesh(local_mesh: LocalMeshHandle) -> Iterator[LocalMeshHandle]:
    local_mesh.deploy(
        NS,
        echo_app(NS, "server"),
        echo_app(NS, "client", service=False),
        ready={"server": 1, "client": 1},
    )
    yield local_mesh
    local_mesh.delete_namespace(NS)


def _client(mesh: LocalMeshHandle) -> dict[str, Any]:
    (pod,) = mesh.pods(NS, "app=client")
    return pod


def _server(mesh: LocalMeshHandle) -> dict[str, Any]:
    (pod,) = mesh.pods(NS, "app=server")
    return pod


def test_server_proxy_sees_the_clients_identity(mesh: LocalMeshHandle) -> None:
    client_id = identity(NS, "client")
    server = _server(mesh)
    before = counter(mesh.metrics(server), "request_total", direction="inbound", tls="true")

    summary = mesh.load(_client(mesh), service_url(NS, "server"), 50, concurrency=2)
    assert summary["ok"] == 50, summary

    after = mesh.metrics(server)
    assert (
        counter(after, "request_total", direction="inbound", tls="true", client_id=client_id)
        - before
        >= 50
    )
    # Nothing the client sent arrived at the server's proxy without mTLS.
    assert counter(after, "response_total", direction="inbound", tls="true") > 0
    # The inbound proxy tells the app who called (and the app answers with it).
    answer = mesh.python_in_pod(_client(mesh), fetch_code(service_url(NS, "server", "/who")))
    assert answer["status"] == 200
    assert json.loads(answer["body"])["client_id"] == client_id
    # The client's proxy, for its part, verified the server's identity.
    client_metrics = mesh.metrics(_client(mesh))
    assert (
        counter(
            client_metrics,
            "request_total",
            direction="outbound",
            tls="true",
            server_id=identity(NS, "server"),
        )
        >= 50
    )


def test_capture_on_the_servers_veth_holds_no_plaintext(
    mesh: LocalMeshHandle, tmp_path: Path
) -> None:
    server = _server(mesh)
    veth = mesh.layout.pod_veth(server["metadata"]["uid"])
    capture = tmp_path / "server.pcap"
    marker = f"GOSSAMER-E2E-PLAINTEXT-{uuid.uuid4().hex}"
    tcpdump = subprocess.Popen(
        [
            "ip", "netns", "exec", mesh.layout.node_netns,
            "tcpdump", "-i", veth, "-n", "-s", "0", "-U", "--immediate-mode", "-Z", "root",
            "-w", str(capture), "tcp",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        _wait_listening(tcpdump)
        summary = mesh.load(
            _client(mesh), service_url(NS, "server"), 40, method="POST", body=marker, concurrency=2
        )
    finally:
        time.sleep(1)  # the last packets reach the capture file
        tcpdump.send_signal(signal.SIGINT)
        _, err = tcpdump.communicate(timeout=20)
    assert summary["ok"] == 40, summary
    # The marker really went through: the app echoed it in all 40 answers.
    assert summary["echoed_marker"] == 40, summary

    data = capture.read_bytes()
    server_ip = server["status"]["podIP"]
    packets = subprocess.run(
        ["tcpdump", "-n", "-r", str(capture), f"tcp and dst host {server_ip}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(packets) >= 40, f"the capture missed the traffic: {err}"
    assert b"\x17\x03\x03" in data, "no TLS application-data record in the capture"
    assert marker.encode() not in data, "the marker crossed the wire in plaintext"


def _wait_listening(tcpdump: subprocess.Popen[str], limit: float = 15) -> None:
    """tcpdump says "listening on <if>" once its capture is live."""
    assert tcpdump.stderr is not None
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        line = tcpdump.stderr.readline()
        if "listening on" in line:
            return
        if not line and tcpdump.poll() is not None:
            raise AssertionError(f"tcpdump exited ({tcpdump.returncode})")
    raise AssertionError("tcpdump did not start capturing")
