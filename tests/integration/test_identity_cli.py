"""``gossamer identity`` against a real TLS 1.3 server on loopback presenting a mesh chain."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from gossamer_cli.main import cli
from gossamer_kube.errors import KubeApiError
from gossamer_kube.testing import KubeTestCluster
from gossamer_tls import (
    Issuer,
    TrustMaterial,
    certificates_to_pem,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    private_key_to_pem,
)

IDENTITY = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"


@dataclass
class TlsServer:
    port: int
    trust: TrustMaterial
    seen_sni: list[str | None] = field(default_factory=list)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsServer]:
    with serve_tls(tmp_path, IDENTITY) as server:
        yield server


@contextlib.contextmanager
def serve_tls(tmp_path: Path, identity: str) -> Iterator[TlsServer]:
    """A TLS 1.3 server on loopback presenting a leaf for ``identity`` and its issuer."""
    now = dt.datetime.now(dt.UTC)
    trust = generate_trust_anchor_and_issuer(
        trust_domain="cluster.local", control_plane_namespace="gossamer", now=now
    )
    key = generate_private_key()
    leaf = Issuer(trust.issuer.certificate, trust.issuer.private_key).sign_leaf(
        key.public_key(), identity, now=now
    )
    (tmp_path / "chain.pem").write_bytes(
        certificates_to_pem([leaf.certificate, trust.issuer.certificate])
    )
    (tmp_path / "key.pem").write_bytes(private_key_to_pem(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3  # like the proxy
    context.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    server = TlsServer(port=listener.getsockname()[1], trust=trust)

    def remember_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        server.seen_sni.append(name)

    context.sni_callback = remember_sni
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)  # until the client closes
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def test_prints_the_presented_chain(tls_server: TlsServer, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(certificates_to_pem([tls_server.trust.trust_anchor.certificate]))
    result = CliRunner().invoke(
        cli,
        [
            "identity",
            f"127.0.0.1:{tls_server.port}",
            "--identity",
            IDENTITY,
            "--trust-anchors",
            str(anchors),
        ],
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"127.0.0.1:{tls_server.port} presented 2 certificate(s) over TLSv1.3" in out
    assert f"Subject:      CN={IDENTITY}" in out
    assert f"SANs:         DNS:{IDENTITY}" in out
    assert "Issuer:       CN=identity.gossamer.cluster.local" in out
    assert "Certificate 1 (CA):" in out
    assert "(valid)" in out
    assert "Key:          ECDSA secp256r1" in out
    assert "Verified: chains to trust anchor CN=root.gossamer.cluster.local" in out
    assert tls_server.seen_sni == [IDENTITY]


def test_pem_output_and_no_sni_without_identity(tls_server: TlsServer) -> None:
    result = CliRunner().invoke(cli, ["identity", f"127.0.0.1:{tls_server.port}", "--pem"])
    assert result.exit_code == 0, result.output
    assert result.output.count("-----BEGIN CERTIFICATE-----") == 2
    assert tls_server.seen_sni == [None]


def test_chain_to_other_anchors_fails(tls_server: TlsServer, tmp_path: Path) -> None:
    other = generate_trust_anchor_and_issuer(
        trust_domain="cluster.local",
        control_plane_namespace="gossamer",
        now=dt.datetime.now(dt.UTC),
    )
    anchors = tmp_path / "other.pem"
    anchors.write_bytes(certificates_to_pem([other.trust_anchor.certificate]))
    result = CliRunner().invoke(
        cli, ["identity", f"127.0.0.1:{tls_server.port}", "--trust-anchors", str(anchors)]
    )
    assert result.exit_code == 1
    assert "chain does NOT verify" in result.output


def test_wrong_expected_identity_fails_verification(tls_server: TlsServer, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(certificates_to_pem([tls_server.trust.trust_anchor.certificate]))
    other = "db.emojivoto.serviceaccount.identity.gossamer.cluster.local"
    result = CliRunner().invoke(
        cli,
        [
            "identity",
            f"127.0.0.1:{tls_server.port}",
            "--identity",
            other,
            "--trust-anchors",
            str(anchors),
        ],
    )
    assert result.exit_code == 1
    assert "is not valid for" in result.output


def test_bad_arguments_and_unreachable_address() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["identity", "no-port-here:"])
    assert result.exit_code == 2
    assert "is not host:port" in result.output
    result = runner.invoke(cli, ["identity", "127.0.0.1:4143", "--identity", "not an identity"])
    assert result.exit_code == 2
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    result = runner.invoke(cli, ["identity", f"127.0.0.1:{closed_port}", "--timeout", "2"])
    assert result.exit_code == 1
    assert "TLS connection to" in result.output


# -- by pod, against the real apiserver ------------------------------------------------------


def meshed_pod(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    """A pod as the injector leaves it: the proxy's identity in its environment."""
    local_name = "$(_pod_sa).$(_pod_ns).serviceaccount.identity.gossamer.cluster.local"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "serviceAccountName": "default",
            "containers": [
                {"name": "app", "image": "gossamer/demo-app:dev"},
                {
                    "name": "linkerd-proxy",
                    "image": "gossamer/proxy:dev",
                    "env": [{"name": "LINKERD2_PROXY_IDENTITY_LOCAL_NAME", "value": local_name}],
                    "ports": [{"name": "linkerd-admin", "containerPort": 4191}],
                },
            ],
        },
    }


def create_pod(cluster: KubeTestCluster, pod: dict[str, Any], ip: str) -> None:
    """Create ``pod`` and give it ``ip`` as a kubelet would. A scheduling gate keeps the
    scheduler (and any fake node) from binding it and writing a status of its own."""
    admin = cluster.admin()
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    pod["spec"]["schedulingGates"] = [{"name": "gossamer.test/unscheduled"}]
    admin.request("POST", f"/api/v1/namespaces/{ns}/pods", pod)
    path = f"/api/v1/namespaces/{ns}/pods/{name}"
    for _ in range(20):  # the scheduler notes the gate in the status meanwhile: retry on 409
        current = admin.request("GET", path)
        current["status"] = {
            **current.get("status", {}), "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        }  # fmt: skip
        try:
            admin.request("PUT", f"{path}/status", current)
            return
        except KubeApiError as exc:
            if exc.status != 409:
                raise
    raise AssertionError(f"could not set the status of pod {name}")


def test_prints_each_pods_chain_dialling_its_identity(
    kube_cluster: KubeTestCluster, kube_namespace: str, tmp_path: Path
) -> None:
    identity = f"default.{kube_namespace}.serviceaccount.identity.gossamer.cluster.local"
    create_pod(kube_cluster, meshed_pod("web-0", kube_namespace, {"app": "web"}), "127.0.0.1")
    create_pod(kube_cluster, meshed_pod("web-1", kube_namespace, {"app": "web"}), "127.0.0.1")
    unmeshed = meshed_pod("db-0", kube_namespace, {"app": "db"})
    unmeshed["spec"]["containers"] = unmeshed["spec"]["containers"][:1]
    create_pod(kube_cluster, unmeshed, "127.0.0.1")
    env = {"KUBECONFIG": str(kube_cluster.kubeconfig)}
    with serve_tls(tmp_path, identity) as server:
        anchors = tmp_path / "anchors.pem"
        anchors.write_bytes(certificates_to_pem([server.trust.trust_anchor.certificate]))
        port = ["--port", str(server.port), "--trust-anchors", str(anchors)]
        one = CliRunner().invoke(
            cli, ["identity", "-n", kube_namespace, "pod/web-0", *port], env=env
        )
        assert one.exit_code == 0, one.output
        assert one.output.startswith("POD web-0 (1 of 1)\n")
        assert f"127.0.0.1:{server.port} presented 2 certificate(s) over TLSv1.3" in one.output
        assert f"SANs:         DNS:{identity}" in one.output
        assert f"and is valid for {identity}" in one.output
        assert server.seen_sni == [identity]

        by_label = CliRunner().invoke(
            cli, ["identity", "-n", kube_namespace, "-l", "app=web", *port], env=env
        )
        assert by_label.exit_code == 0, by_label.output
        assert "POD web-0 (1 of 2)" in by_label.output
        assert "POD web-1 (2 of 2)" in by_label.output

        # Bare names work too; a pod without a proxy fails clearly and the others still print.
        mixed = CliRunner().invoke(
            cli, ["identity", "-n", kube_namespace, "web-1", "db-0", *port], env=env
        )
        assert mixed.exit_code == 1
        assert "POD web-1 (1 of 2)" in mixed.output
        assert "pod db-0 has no linkerd-proxy container: is it meshed?" in mixed.output
        assert "failed for 1 pod(s): db-0" in mixed.output

    missing = CliRunner().invoke(cli, ["identity", "-n", kube_namespace, "pod/nope"], env=env)
    assert missing.exit_code == 1
    assert f'pod "nope" not found in namespace {kube_namespace}' in missing.output
