"""TLSRoute end to end: a meshed pod's TLS connections leaving the mesh are routed by SNI.

The outside world is a network namespace this test creates (``<prefix>-tlsroute-ext``),
joined to the client pod's namespace by a veth pair on 198.51.100.4/30 (TEST-NET-2, outside
every cluster network), with a real TLS server on port 443 that answers the server name it
was asked for. An ``EgressNetwork`` with ``trafficPolicy: Deny`` holds that address, and a
Gateway API TLSRoute with it as parent (port 443) routes by hostname:

* ``api.example.test`` → the EgressNetwork itself: the client's TLS handshake, passed
  through untouched by its outbound proxy, completes with the outside server;
* ``*.inside.example.test`` → a Service in the mesh (a TCP echo): the very same ClientHello
  comes back, so the connection went there and not outside;
* any other name → the trafficPolicy (Deny): the proxy refuses the connection, counted in
  ``outbound_tls_route_close_total{error="forbidden"}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from localmesh import LocalMeshHandle, converge, counter, echo_app
from outside_world import outside_world

pytestmark = pytest.mark.netns

NS = "mesh-tlsroute"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gateway-api"
POD_SIDE, OUTSIDE = "198.51.100.5", "198.51.100.6"
ECHO_PORT = 9000

OUTSIDE_TLS_SERVER = r"""
import datetime, os, socket, ssl, sys, tempfile, threading
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "outside")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256()))
directory = tempfile.mkdtemp()
cert_path, key_path = os.path.join(directory, "c.pem"), os.path.join(directory, "k.pem")
with open(cert_path, "wb") as f:
    f.write(cert.public_bytes(serialization.Encoding.PEM))
with open(key_path, "wb") as f:
    f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert_path, key_path)
asked = {}

def remember(conn, server_name, ctx):
    asked[id(conn)] = server_name or ""

context.sni_callback = remember
sock = socket.create_server((sys.argv[1], 443))

def loop():
    while True:
        raw, _ = sock.accept()
        raw.settimeout(5)
        try:
            with context.wrap_socket(raw, server_side=True) as tls:
                tls.sendall(b"outside:" + asked.pop(id(tls), "?").encode())
        except OSError:
            raw.close()

threading.Thread(target=loop, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()  # until the test closes stdin
"""

CLIENT = f"""
import json, socket, ssl

def context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx

def handshake(name):
    try:
        with socket.create_connection(("{OUTSIDE}", 443), timeout=10) as raw:
            with context().wrap_socket(raw, server_hostname=name) as tls:
                return tls.recv(4096).decode()
    except OSError as e:
        return "error:" + type(e).__name__

def echoed(name):
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context().wrap_bio(incoming, outgoing, server_hostname=name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    try:
        with socket.create_connection(("{OUTSIDE}", 443), timeout=10) as s:
            s.sendall(hello)
            got = b""
            while len(got) < len(hello):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
    except OSError as e:
        return "error:" + type(e).__name__
    return "echoed" if got == hello else "other:" + got[:16].hex()

print(json.dumps({{
    "api": handshake("api.example.test"),
    "inside": echoed("x.inside.example.test"),
    "evil": handshake("evil.example.test"),
}}))
"""

EGRESS_PARENT = {"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": "outside"}


def manifests() -> str:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "inside-echo", "namespace": NS},
            "spec": {
                "selector": {"app": "inside-echo"},
                "ports": [{"name": "tcp", "port": ECHO_PORT, "targetPort": ECHO_PORT}],
            },
        },
        {
            "apiVersion": "policy.linkerd.io/v1alpha1",
            "kind": "EgressNetwork",
            "metadata": {"name": "outside", "namespace": NS},
            "spec": {"trafficPolicy": "Deny", "networks": [{"cidr": f"{OUTSIDE}/32"}]},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1alpha2",
            "kind": "TLSRoute",
            "metadata": {"name": "api", "namespace": NS},
            "spec": {
                "parentRefs": [{**EGRESS_PARENT, "port": 443}],
                "hostnames": ["api.example.test"],
                "rules": [{"backendRefs": [EGRESS_PARENT]}],
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1alpha2",
            "kind": "TLSRoute",
            "metadata": {"name": "inside", "namespace": NS},
            "spec": {
                "parentRefs": [{**EGRESS_PARENT, "port": 443}],
                "hostnames": ["*.inside.example.test"],
                "rules": [{"backendRefs": [{"name": "inside-echo", "port": ECHO_PORT}]}],
            },
        },
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)


@pytest.fixture(scope="module")
def mesh(local_mesh: LocalMeshHandle) -> Iterator[tuple[LocalMeshHandle, dict[str, Any]]]:
    local_mesh.deploy(
        NS,
        echo_app(NS, "client", service=False),
        echo_app(NS, "inside-echo", args=["--tcp-listen", f"0.0.0.0:{ECHO_PORT}"], service=False),
        ready={"client": 1, "inside-echo": 1},
    )
    (pod,) = local_mesh.pods(NS, "app=client")
    try:
        with outside_world(
            local_mesh, pod, name="tlsroute-ext", veth="tlx", pod_side=POD_SIDE, outside=OUTSIDE,
            server=OUTSIDE_TLS_SERVER,
        ):  # fmt: skip
            yield local_mesh, pod
    finally:
        local_mesh.delete_namespace(NS)


def test_tls_routes_send_each_server_name_to_its_backend_and_refuse_the_rest(
    mesh: tuple[LocalMeshHandle, dict[str, Any]],
) -> None:
    handle, pod = mesh
    handle.kubectl("apply", "-f", str(FIXTURES / "tlsroutes.yaml"))
    handle.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/tlsroutes.gateway.networking.k8s.io",
    )  # fmt: skip
    handle.apply(manifests())

    result = converge(
        lambda: handle.python_in_pod(pod, CLIENT, limit=60),
        lambda r: r["api"].startswith("outside:") and r["inside"] == "echoed",
        limit=90,
    )
    # The handshake reached the outside server, which saw the client's own SNI.
    assert result["api"] == "outside:api.example.test", result
    assert result["inside"] == "echoed", result  # the in-mesh echo, not the outside server
    assert result["evil"].startswith("error:"), result  # refused by the trafficPolicy

    metrics = handle.metrics(pod)
    parent = {"parent_kind": "EgressNetwork", "parent_name": "outside"}
    assert counter(metrics, "outbound_tls_route_open_total", route_name="api", **parent) >= 1
    assert counter(metrics, "outbound_tls_route_open_total", route_name="inside", **parent) >= 1
    refused = counter(
        metrics,
        "outbound_tls_route_close_total",
        route_name="tls-egress-deny",
        error="forbidden",
        **parent,
    )
    assert refused >= 1, metrics
    routes = handle.get("tlsroute", "api", NS)
    (entry,) = routes["status"]["parents"]
    assert {c["type"]: c["status"] for c in entry["conditions"]} == {
        "Accepted": "True",
        "ResolvedRefs": "True",
    }
