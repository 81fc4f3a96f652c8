"""ExternalWorkload end to end: a meshed pod reaches a proxy that runs outside Kubernetes.

The "VM" is a plain network namespace this test creates (``<prefix>-extwl-vm``), joined to
the local node's bridge by a veth pair with an address of the bridge's network outside the
pod CIDR (as a VM on the cluster's network; no traffic leaves the namespaces of the test). In
it run the e2e echo app on <vm>:8080 and a Gossamer
proxy as uid 2102, with no iptables and no Kubernetes: its identity is the SPIFFE ID
``spiffe://cluster.local/vm/billing``, an X.509-SVID that the mesh issuer signed
(``gossamer svid``) and the test hands to it as files (``GOSSAMER_PROXY_IDENTITY_CERT_FILE``
and ``…_KEY_FILE``, as a SPIFFE helper would write them); it answers mTLS for the server name
``billing.vm.cluster.local``. Its inbound default policy is ``all-authenticated``: only a
client with a mesh certificate gets through (the ExternalWorkload's annotation says the same
to the policy API). It watches its inbound policy from the policy
API as the ExternalWorkload it is (``LINKERD2_PROXY_POLICY_WORKLOAD``
``{"ns":…,"external_workload":"vm-billing"}``), over mTLS with its SVID.

An ``ExternalWorkload`` names that identity, server name, IP and ports; a Service selects it
by label. The client pod's app calls the Service by name; its outbound proxy gets the
workload as the Service's endpoint from the destination (URI identity + server name), dials
the VM proxy's 4143 with SNI = the server name, verifies the URI identity, and sends a
transport header for port 8080. The app answers with the ``l5d-client-id`` the VM proxy
added (the client pod's identity), and the VM proxy's metrics count the request as mTLS from
that client. The workload only becomes an endpoint once its ``Ready`` condition is True.

A ``Server`` whose ``externalWorkloadSelector`` selects the workload, with an
``AuthorizationPolicy`` that admits only the ``client`` ServiceAccount, then lets the client
pod through and refuses another meshed pod (``intruder``) with 403, counted by the VM proxy
as denied by that Server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gossamer_cli.dev.controlplane import POLICY_PORT
from localmesh import APPS, RUNTIME_VENV, LocalMeshHandle, converge, counter, echo_app, identity

pytestmark = pytest.mark.netns

NS = "mesh-extwl"
#: On the node's bridge network, outside the pod CIDR and the control plane's addresses.
VM_IP = "10.244.0.200"
VM_ID = "spiffe://cluster.local/vm/billing"
VM_NAME = "billing.vm.cluster.local"
POLICY_SVC_NAME = "gossamer-destination.gossamer.serviceaccount.identity.gossamer.cluster.local"
PROXY_UID = 2102
APP_UID = 2200
PYTHON = str(RUNTIME_VENV / "bin" / "python")

CLIENT = """
import json, urllib.error, urllib.request
try:
    url = "http://billing.NAMESPACE.svc.cluster.local/hello"
    with urllib.request.urlopen(url, timeout=10) as r:
        print(json.dumps({"status": r.status, "body": json.loads(r.read())}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read().decode(errors="replace")}))
except OSError as e:
    print(json.dumps({"status": 0, "body": repr(e)}))
""".replace("NAMESPACE", NS)

SERVICE = json.dumps(
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "billing", "namespace": NS},
        "spec": {
            "selector": {"app": "billing"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
)

WORKLOAD = json.dumps(
    {
        "apiVersion": "workload.linkerd.io/v1beta1",
        "kind": "ExternalWorkload",
        "metadata": {
            "name": "vm-billing",
            "namespace": NS,
            "labels": {"app": "billing"},
            # Served by the policy API as the default of the workload's ports.
            "annotations": {"config.linkerd.io/default-inbound-policy": "all-authenticated"},
        },
        "spec": {
            "meshTLS": {"identity": VM_ID, "serverName": VM_NAME},
            "workloadIPs": [{"ip": VM_IP}],
            "ports": [{"name": "http", "port": 8080}, {"name": "linkerd-proxy", "port": 4143}],
        },
    }
)

#: Only the client pod's ServiceAccount may call the workload's ``http`` port.
POLICY = [
    {
        "apiVersion": "policy.linkerd.io/v1beta3",
        "kind": "Server",
        "metadata": {"name": "billing-http", "namespace": NS},
        "spec": {
            "externalWorkloadSelector": {"matchLabels": {"app": "billing"}},
            "port": "http",
            "proxyProtocol": "HTTP/1",
        },
    },
    {
        "apiVersion": "policy.linkerd.io/v1alpha1",
        "kind": "MeshTLSAuthentication",
        "metadata": {"name": "billing-clients", "namespace": NS},
        "spec": {"identityRefs": [{"kind": "ServiceAccount", "name": "client"}]},
    },
    {
        "apiVersion": "policy.linkerd.io/v1alpha1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "billing-clients", "namespace": NS},
        "spec": {
            "targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "billing-http"},
            "requiredAuthenticationRefs": [
                {"group": "policy.linkerd.io", "kind": "MeshTLSAuthentication",
                 "name": "billing-clients"},
            ],
        },
    },
]  # fmt: skip


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _as(uid: int, argv: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]


def _write_svid(control_plane: Path, directory: Path) -> tuple[Path, Path]:
    """An X.509-SVID for the VM, signed by the local mesh's issuer (``gossamer svid``)."""
    issuer_dir = control_plane / "identity" / "issuer"
    subprocess.run(
        [sys.executable, "-m", "gossamer_cli.main", "svid", VM_ID,
         "--issuer-cert", str(issuer_dir / "crt.pem"), "--issuer-key", str(issuer_dir / "key.pem"),
         "--out-dir", str(directory)],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    cert, key = directory / "svid.pem", directory / "svid_key.pem"
    os.chown(key, PROXY_UID, PROXY_UID)
    directory.chmod(0o755)
    return cert, key


def _vm_run(vm: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", vm, *argv], capture_output=True, text=True, timeout=20
    )


def _wait(check: Any, what: str, procs: list[subprocess.Popen[str]], limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not check():
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{what}: a VM process exited: {proc.communicate(timeout=5)}")
        assert time.monotonic() < deadline, f"{what}: timed out"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def mesh(local_mesh: LocalMeshHandle) -> Iterator[tuple[LocalMeshHandle, dict[str, Any], str]]:
    local_mesh.deploy(
        NS,
        echo_app(NS, "client", service=False),
        echo_app(NS, "intruder", service=False),
        ready={"client": 1, "intruder": 1},
    )
    (pod,) = local_mesh.pods(NS, "app=client")
    layout = local_mesh.layout
    vm = f"{layout.prefix}-extwl-vm"
    workdir = local_mesh.state_dir.parent / f"{local_mesh.layout.prefix}-extwl"
    workdir.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[str]] = []
    _ip("netns", "add", vm)
    try:
        _ip("-n", vm, "link", "add", "vmx0", "type", "veth", "peer", "name", "extwlvm0",
            "netns", layout.node_netns)  # fmt: skip
        _ip("-n", vm, "addr", "add", f"{VM_IP}/{layout.bridge_prefix_len}", "dev", "vmx0")
        _ip("-n", vm, "link", "set", "vmx0", "up")
        _ip("-n", vm, "link", "set", "lo", "up")
        _ip("-n", layout.node_netns, "link", "set", "extwlvm0", "master", layout.bridge)
        _ip("-n", layout.node_netns, "link", "set", "extwlvm0", "up")
        # Not Ready yet, so no endpoint; it exists before its proxy asks for its policy.
        local_mesh.apply(WORKLOAD)
        control_plane = local_mesh.state_dir / "control-plane"
        cert, key = _write_svid(control_plane, workdir)
        anchors = (control_plane / "identity" / "ca-bundle.crt").read_text()
        app = subprocess.Popen(
            ["ip", "netns", "exec", vm,
             *_as(APP_UID, [PYTHON, str(APPS / "echo.py"), "--listen", f"{VM_IP}:8080"])],
            env={"PATH": "/usr/bin:/bin", "POD_NAME": "vm-billing"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
        )  # fmt: skip
        procs.append(app)
        policy_host = layout.control_plane_address("destination")
        proxy_env = {
            "PATH": "/usr/bin:/bin",
            "LINKERD2_PROXY_IDENTITY_SERVER_ID": VM_ID,
            "LINKERD2_PROXY_IDENTITY_SERVER_NAME": VM_NAME,
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": anchors,
            "GOSSAMER_PROXY_IDENTITY_CERT_FILE": str(cert),
            "GOSSAMER_PROXY_IDENTITY_KEY_FILE": str(key),
            "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "0.0.0.0:4143",
            "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS": "127.0.0.1:4140",
            "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "127.0.0.1:4191",
            "LINKERD2_PROXY_INBOUND_IPS": VM_IP,
            "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY": "all-authenticated",
            "LINKERD2_PROXY_POLICY_SVC_ADDR": f"{policy_host}:{POLICY_PORT}",
            "LINKERD2_PROXY_POLICY_SVC_NAME": POLICY_SVC_NAME,
            "LINKERD2_PROXY_POLICY_WORKLOAD": json.dumps(
                {"ns": NS, "external_workload": "vm-billing"}
            ),
            "LINKERD2_PROXY_LOG": "info",
        }
        proxy_log = (workdir / "proxy.log").open("w")
        proxy = subprocess.Popen(
            ["ip", "netns", "exec", vm, *_as(PROXY_UID, [PYTHON, "-m", "gossamer_proxy"])],
            env=proxy_env, stdout=proxy_log, stderr=subprocess.STDOUT, text=True, cwd="/",
        )  # fmt: skip
        procs.append(proxy)
        _wait(
            lambda: _vm_run(vm, ["curl", "-sf", "-m", "2", "http://127.0.0.1:4191/ready"])
            .returncode == 0,
            "VM proxy ready", procs,
        )  # fmt: skip
        _wait(
            lambda: _vm_run(vm, ["curl", "-sf", "-m", "2", f"http://{VM_IP}:8080/ready"])
            .returncode == 0,
            "VM app ready", procs,
        )  # fmt: skip
        local_mesh.apply(SERVICE)
        yield local_mesh, pod, vm
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        subprocess.run(["ip", "netns", "delete", vm], capture_output=True, timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
        local_mesh.delete_namespace(NS)


def _call(mesh: LocalMeshHandle, pod: dict[str, Any]) -> dict[str, Any]:
    """One request from ``pod``'s app to the workload through the Service."""
    result: dict[str, Any] = mesh.python_in_pod(pod, CLIENT, limit=60)
    return result


def _set_ready(mesh: LocalMeshHandle, status: str) -> None:
    body = json.dumps({"status": {"conditions": [{"type": "Ready", "status": status}]}})
    mesh.kubectl(
        "patch", "externalworkload", "vm-billing", "-n", NS,
        "--subresource=status", "--type=merge", "-p", body,
    )  # fmt: skip


def test_a_meshed_pod_reaches_an_external_workload_over_mtls(
    mesh: tuple[LocalMeshHandle, dict[str, Any], str],
) -> None:
    handle, pod, vm = mesh
    # Not Ready yet: the Service has no endpoint, so the call fails.
    before = _call(handle, pod)
    assert before["status"] != 200, before

    _set_ready(handle, "True")
    reached = converge(lambda: _call(handle, pod), lambda r: r["status"] == 200, limit=60)
    assert reached["status"] == 200, reached
    body = reached["body"]
    assert body["pod"] == "vm-billing", body
    assert body["path"] == "/hello", body
    client_id = identity(NS, "client")
    # The VM proxy terminated mTLS and named the client pod's identity.
    assert body["client_id"] == client_id, body

    vm_metrics = _vm_run(vm, ["curl", "-sS", "-m", "5", "http://127.0.0.1:4191/metrics"]).stdout
    served = counter(
        vm_metrics, "request_total", direction="inbound", tls="true", client_id=client_id
    )
    assert served >= 1, vm_metrics
    client_metrics = handle.metrics(pod)
    sent = counter(
        client_metrics,
        "request_total",
        direction="outbound",
        tls="true",
        server_id=VM_ID,
        dst_external_workload="vm-billing",
    )
    assert sent >= 1, client_metrics

    # Not Ready again: the endpoint is withdrawn.
    _set_ready(handle, "False")
    gone = converge(lambda: _call(handle, pod), lambda r: r["status"] != 200, limit=60)
    assert gone["status"] != 200, gone


def test_a_server_selecting_the_external_workload_admits_only_its_authorized_client(
    mesh: tuple[LocalMeshHandle, dict[str, Any], str],
) -> None:
    handle, pod, vm = mesh
    (intruder,) = handle.pods(NS, "app=intruder")
    _set_ready(handle, "True")
    # Under the workload's default (all-authenticated) any meshed client gets through.
    reached = converge(lambda: _call(handle, intruder), lambda r: r["status"] == 200, limit=60)
    assert reached["status"] == 200, reached

    for doc in POLICY:
        handle.apply(json.dumps(doc))
    denied = converge(lambda: _call(handle, intruder), lambda r: r["status"] == 403, limit=60)
    assert denied["status"] == 403, denied
    allowed = _call(handle, pod)
    assert allowed["status"] == 200, allowed
    assert allowed["body"]["client_id"] == identity(NS, "client"), allowed

    # The VM proxy enforced the Server the policy API sent for the ExternalWorkload.
    vm_metrics = _vm_run(vm, ["curl", "-sS", "-m", "5", "http://127.0.0.1:4191/metrics"]).stdout
    server = {"srv_kind": "server", "srv_name": "billing-http"}
    assert (
        counter(
            vm_metrics,
            "inbound_http_authz_deny_total",
            client_id=identity(NS, "intruder"),
            **server,
        )
        >= 1
    ), vm_metrics
    assert counter(
        vm_metrics, "inbound_http_authz_allow_total", client_id=identity(NS, "client"),
        authz_name="billing-clients", **server
    ) >= 1, vm_metrics  # fmt: skip
