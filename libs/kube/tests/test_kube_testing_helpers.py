"""Pure helpers of the test cluster: kwok stages, process identity, log tails, PKI."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from gossamer_kube.testing.pki import ClusterPKI
from gossamer_kube.testing.process import ProcessRecord, proc_start_time, tail
from gossamer_kube.testing.stages import KWOK_STAGES_YAML


def test_kwok_stages_cover_node_ready_pod_running_and_delete() -> None:
    docs = list(yaml.safe_load_all(KWOK_STAGES_YAML))
    assert docs[0]["kind"] == "KwokConfiguration"
    stages = {d["metadata"]["name"]: d["spec"] for d in docs[1:]}
    assert {d["kind"] for d in docs[1:]} == {"Stage"}
    assert stages["gossamer-node-ready"]["resourceRef"]["kind"] == "Node"
    running = stages["gossamer-pod-running"]
    assert "PodIPWith .spec.nodeName" in running["next"]["statusTemplate"]
    assert "phase: Running" in running["next"]["statusTemplate"]
    assert stages["gossamer-pod-delete"]["next"] == {"finalizers": {"empty": True}, "delete": True}


def test_process_identity_detects_reused_pids() -> None:
    me = proc_start_time(os.getpid())
    assert me is not None
    assert ProcessRecord("self", os.getpid(), me, "/dev/null").is_ours()
    assert not ProcessRecord("self", os.getpid(), me + 1, "/dev/null").is_ours()
    record = ProcessRecord("x", 123, 456, "/tmp/x.log")
    assert ProcessRecord.from_json(record.to_json()) == record


def test_tail_of_log(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(log, 3) == "line 97\nline 98\nline 99"
    assert "cannot read" in tail(tmp_path / "absent.log")


def test_cluster_pki_roles() -> None:
    pki = ClusterPKI.generate("10.96.0.1")
    serving = x509.load_pem_x509_certificate(pki.apiserver.cert_pem)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} >= {
        "127.0.0.1",
        "10.96.0.1",
    }
    admin = x509.load_pem_x509_certificate(pki.admin.cert_pem)
    orgs = admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [o.value for o in orgs] == ["system:masters"]
    eku = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert b"BEGIN PUBLIC KEY" in pki.sa_public_pem


def test_cluster_pki_has_a_front_proxy_apart_from_the_cluster_ca(tmp_path: Path) -> None:
    pki = ClusterPKI.generate("10.96.0.1")
    client = x509.load_pem_x509_certificate(pki.front_proxy_client.cert_pem)
    front_ca = x509.load_pem_x509_certificate(pki.front_proxy_ca.cert_pem)
    cluster_ca = x509.load_pem_x509_certificate(pki.ca.cert_pem)
    client.verify_directly_issued_by(front_ca)
    assert client.issuer != cluster_ca.subject  # users' CA and the proxy's are different
    names = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [n.value for n in names] == ["front-proxy-client"]
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    files = pki.write(tmp_path / "pki")
    assert files.front_proxy_ca_cert.read_bytes() == pki.front_proxy_ca.cert_pem
    assert files.front_proxy_client_key.read_bytes() == pki.front_proxy_client.key_pem
    assert files.front_proxy_client_cert.stat().st_mode & 0o077 == 0
