"""``gossamer install --identity-external-issuer``: cert-manager owns the issuer Secret.

The manifests carry the trust anchors but no issuer Secret, the config says
``issuerScheme: kubernetes.io/tls``, and the identity Deployment mounts the Secret that
cert-manager writes (``tls.crt`` with the root appended, ``tls.key``, ``ca.crt``) where the
identity service looks for it; the service's own loader then accepts that layout.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from gossamer_cli.main import cli
from gossamer_identity.issuer import IssuerFiles
from gossamer_tls import (
    certificates_to_pem,
    generate_trust_anchor_and_issuer,
    issuer_name,
    private_key_to_pem,
)

NAMESPACE = "gossamer"
ISSUER_SECRET = "gossamer-identity-issuer"


def install(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["install", *args])
    return result.exit_code, result.output


def objects(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(text) if d}


def cert_manager_material(now: dt.datetime) -> tuple[str, dict[str, bytes]]:
    """The anchor PEM, and the issuer Secret's data as cert-manager writes it."""
    trust = generate_trust_anchor_and_issuer(
        trust_domain="cluster.local", control_plane_namespace=NAMESPACE, now=now
    )
    anchor = certificates_to_pem([trust.trust_anchor.certificate])
    secret = {
        "tls.crt": certificates_to_pem([trust.issuer.certificate, trust.trust_anchor.certificate]),
        "tls.key": private_key_to_pem(trust.issuer.private_key),
        "ca.crt": anchor,
    }
    return anchor.decode(), secret


def test_external_issuer_renders_no_issuer_secret_and_identity_loads_cert_managers(
    tmp_path: Path,
) -> None:
    now = dt.datetime.now(dt.UTC)
    anchor_pem, secret = cert_manager_material(now)
    anchors = tmp_path / "ca.crt"
    anchors.write_text(anchor_pem)
    code, out = install("--identity-external-issuer", "--identity-trust-anchors-file", str(anchors))
    assert code == 0, out
    objs = objects(out)
    assert ("Secret", ISSUER_SECRET) not in objs  # cert-manager's to write, never ours
    assert objs["ConfigMap", "gossamer-config"]["data"]["issuerScheme"] == "kubernetes.io/tls"
    roots = objs["ConfigMap", "gossamer-identity-trust-roots"]["data"]["ca-bundle.crt"]
    assert roots == anchor_pem

    # Lay the Secret and the trust roots out where the identity Deployment mounts them.
    pod = objs["Deployment", "gossamer-identity"]["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "identity")
    env = {e["name"]: e.get("value") for e in container["env"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    issuer_dir = env["GOSSAMER_IDENTITY_ISSUER_DIR"]
    assert mounts[issuer_dir]["secret"]["secretName"] == ISSUER_SECRET
    anchors_path = env["GOSSAMER_IDENTITY_TRUST_ANCHORS_PATH"]
    anchors_volume = mounts[str(Path(anchors_path).parent)]
    assert anchors_volume["configMap"]["name"] == "gossamer-identity-trust-roots"
    root = tmp_path / "pod"
    (root / issuer_dir.lstrip("/")).mkdir(parents=True)
    for key, value in secret.items():
        (root / issuer_dir.lstrip("/") / key).write_bytes(value)
    (root / anchors_path.lstrip("/")).parent.mkdir(parents=True)
    (root / anchors_path.lstrip("/")).write_text(roots)
    loaded = IssuerFiles(root / issuer_dir.lstrip("/"), root / anchors_path.lstrip("/")).load(
        now=now
    )
    expected = issuer_name(control_plane_namespace=NAMESPACE, trust_domain="cluster.local")
    assert loaded.subject == f"CN={expected}"


def test_external_issuer_needs_anchors_and_refuses_issuer_files(tmp_path: Path) -> None:
    code, out = install("--identity-external-issuer")
    assert code == 2
    assert "needs --identity-trust-anchors-file" in out
    anchor_pem, secret = cert_manager_material(dt.datetime.now(dt.UTC))
    anchors = tmp_path / "ca.crt"
    anchors.write_text(anchor_pem)
    crt = tmp_path / "issuer.crt"
    crt.write_bytes(secret["tls.crt"])
    code, out = install(
        "--identity-external-issuer", "--identity-trust-anchors-file", str(anchors),
        "--identity-issuer-certificate-file", str(crt),
    )  # fmt: skip
    assert code == 2
    assert "do not give --identity-issuer-certificate-file" in out


def test_external_issuer_refuses_garbage_anchors(tmp_path: Path) -> None:
    anchors = tmp_path / "ca.crt"
    anchors.write_text("not a certificate")
    code, out = install("--identity-external-issuer", "--identity-trust-anchors-file", str(anchors))
    assert code == 1
    assert "identity trust anchors" in out
