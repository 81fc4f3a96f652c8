"""``gossamer install/upgrade/uninstall`` offline: rendering, certificates, values and errors."""

from __future__ import annotations

import base64
import datetime as dt
import json
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from cryptography import x509
from gossamer_cli.main import cli
from gossamer_cli.manifests_certs import (
    CertificateInputError,
    check_identity,
    generate_identity,
    webhook_dns_name,
)
from gossamer_cli.manifests_values import ValuesError, merge, parse_set
from gossamer_tls import (
    certificates_to_pem,
    create_issuer,
    create_trust_anchor,
    load_certificates,
    private_key_to_pem,
    verify_chain,
)

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(autouse=True)
def _now_is_when_the_test_runs() -> None:
    """Certificates made by fixtures use the real clock; judge them at the test's own time.

    A module-level "now" taken at import would be minutes older than certificates generated
    later in a long run, and make them look not yet valid.
    """
    global NOW
    NOW = dt.datetime.now(dt.UTC)


def install(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["install", *args])
    return result.exit_code, result.output


def objects(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(text) if d}


def write_identity(tmp_path: Path, namespace: str = "gossamer") -> dict[str, Path]:
    pems = generate_identity(namespace=namespace, trust_domain="cluster.local", now=NOW)
    paths = {k: tmp_path / f"{k}.pem" for k in ("ca", "crt", "key")}
    paths["ca"].write_text(pems.trust_anchors_pem)
    paths["crt"].write_text(pems.issuer_crt_pem)
    paths["key"].write_text(pems.issuer_key_pem)
    return paths


def cert_args(paths: dict[str, Path]) -> list[str]:
    return [
        "--identity-trust-anchors-file", str(paths["ca"]),
        "--identity-issuer-certificate-file", str(paths["crt"]),
        "--identity-issuer-key-file", str(paths["key"]),
    ]  # fmt: skip


def test_install_generates_a_working_identity_and_webhook() -> None:
    code, out = install()
    assert code == 0, out
    objs = objects(out)
    anchors = load_certificates(
        objs["ConfigMap", "gossamer-identity-trust-roots"]["data"]["ca-bundle.crt"]
    )
    issuer_secret = objs["Secret", "gossamer-identity-issuer"]
    issuer = x509.load_pem_x509_certificate(base64.b64decode(issuer_secret["data"]["crt.pem"]))
    verify_chain(issuer, [], anchors, now=NOW)
    tls = objs["Secret", "gossamer-proxy-injector-k8s-tls"]["data"]
    hook = objs["MutatingWebhookConfiguration", "gossamer-proxy-injector-webhook-config"]
    ca = load_certificates(base64.b64decode(hook["webhooks"][0]["clientConfig"]["caBundle"]))
    leaf = x509.load_pem_x509_certificate(base64.b64decode(tls["tls.crt"]))
    verify_chain(leaf, [], ca, now=NOW, dns_name=webhook_dns_name("gossamer"))


def test_install_order_and_meshed_control_plane() -> None:
    code, out = install("-L", "mesh-system")
    assert code == 0, out
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds[0] == "Namespace"
    assert kinds[-1] == "MutatingWebhookConfiguration"
    assert kinds.index("ServiceAccount") < kinds.index("Deployment")
    for d in docs:
        if d["kind"] == "Deployment":
            spec = d["spec"]["template"]["spec"]
            assert [c["name"] for c in spec["initContainers"]] == ["linkerd-init", "linkerd-proxy"]
            assert d["metadata"]["namespace"] == "mesh-system"
            env = {e["name"]: e.get("value") for e in spec["initContainers"][1]["env"]}
            assert env["LINKERD2_PROXY_IDENTITY_LOCAL_NAME"].endswith(
                ".serviceaccount.identity.mesh-system.cluster.local"
            )


def test_identity_sidecar_starts_before_it_has_a_certificate() -> None:
    """kubelet starts the identity container only after its native sidecar's startup probe
    passes, and that proxy gets its certificate from the identity container: probing /ready
    deadlocked the pod on a real kubelet. The other components' proxies wait for /ready."""
    code, out = install()
    assert code == 0, out
    paths = {}
    for (kind, name), d in objects(out).items():
        if kind == "Deployment":
            proxy = d["spec"]["template"]["spec"]["initContainers"][1]
            paths[name] = proxy["startupProbe"]["httpGet"]["path"]
    assert paths == {
        "gossamer-identity": "/live",
        "gossamer-destination": "/ready",
        "gossamer-proxy-injector": "/ready",
    }


def test_install_crds_only() -> None:
    code, out = install("--crds")
    assert code == 0, out
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert docs
    assert {d["kind"] for d in docs} == {"CustomResourceDefinition"}


def test_ha_and_json_output() -> None:
    code, out = install("--ha", "-o", "json")
    assert code == 0, out
    body = json.loads(out)
    assert body["kind"] == "List"
    kinds = [i["kind"] for i in body["items"]]
    assert kinds.count("PodDisruptionBudget") == 3
    deploy = next(i for i in body["items"] if i["kind"] == "Deployment")
    assert deploy["spec"]["replicas"] == 3
    assert "podAntiAffinity" in deploy["spec"]["template"]["spec"]["affinity"]


def test_set_and_registry_select_images() -> None:
    code, out = install("--set", "image.registry=ghcr.io/me", "--set", "image.tag=1.2.3")
    assert code == 0, out
    d = objects(out)["Deployment", "gossamer-identity"]["spec"]["template"]["spec"]
    assert d["containers"][0]["image"] == "ghcr.io/me/identity:1.2.3"
    assert d["initContainers"][1]["image"] == "ghcr.io/me/proxy:1.2.3"


def test_given_certificates_are_used(tmp_path: Path) -> None:
    paths = write_identity(tmp_path)
    code, out = install(*cert_args(paths))
    assert code == 0, out
    cm = objects(out)["ConfigMap", "gossamer-identity-trust-roots"]
    assert cm["data"]["ca-bundle.crt"] == paths["ca"].read_text()


def test_write_identity_dir(tmp_path: Path) -> None:
    code, out = install("--write-identity-dir", str(tmp_path / "dev"))
    assert code == 0, out
    written = (tmp_path / "dev" / "ca.crt").read_text()
    assert (
        objects(out)["ConfigMap", "gossamer-identity-trust-roots"]["data"]["ca-bundle.crt"]
        == written
    )
    assert (tmp_path / "dev" / "issuer.key").stat().st_mode & 0o077 == 0


def test_write_identity_dir_replaces_a_readable_issuer_key_with_a_private_one(
    tmp_path: Path,
) -> None:
    """An existing issuer.key keeps neither its mode nor its inode: a new 0600 file replaces it."""
    directory = tmp_path / "dev"
    directory.mkdir()
    old_key = directory / "issuer.key"
    old_key.write_text("old key\n")
    old_key.chmod(0o644)
    old_inode = old_key.stat().st_ino
    code, out = install("--write-identity-dir", str(directory))
    assert code == 0, out
    key = directory / "issuer.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.stat().st_ino != old_inode  # renamed into place, not rewritten in place
    assert "PRIVATE KEY" in key.read_text()
    assert sorted(p.name for p in directory.iterdir()) == ["ca.crt", "issuer.crt", "issuer.key"]


def test_write_private_file_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    from gossamer_cli.install import write_private_file

    target = tmp_path / "issuer.key"
    target.mkdir()  # a directory: the final rename fails
    with pytest.raises(IsADirectoryError):
        write_private_file(target, b"secret")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["issuer.key"]


def test_partial_certificates_are_refused(tmp_path: Path) -> None:
    paths = write_identity(tmp_path)
    code, out = install("--identity-trust-anchors-file", str(paths["ca"]))
    assert code == 2
    assert "or none of them" in out


def test_issuer_for_another_namespace_is_refused(tmp_path: Path) -> None:
    paths = write_identity(tmp_path, namespace="linkerd")
    code, out = install(*cert_args(paths))
    assert code == 1
    assert "expect 'identity.gossamer.cluster.local'" in out


def test_issuer_from_another_anchor_is_refused(tmp_path: Path) -> None:
    paths = write_identity(tmp_path)
    other = create_trust_anchor(common_name="root.other", now=NOW)
    paths["ca"].write_bytes(certificates_to_pem([other.certificate]))
    code, out = install(*cert_args(paths))
    assert code == 1
    assert "does not verify against the trust anchors" in out


def test_garbage_certificate_files_are_refused(tmp_path: Path) -> None:
    paths = write_identity(tmp_path)
    paths["key"].write_text("not a key")
    code, out = install(*cert_args(paths))
    assert code == 1
    assert "identity issuer" in out
    missing = tmp_path / "nope.pem"
    code, out = install(*cert_args({**paths, "ca": missing}))
    assert code == 2
    assert "cannot read the trust anchors file" in out


def test_expired_issuer_is_refused() -> None:
    anchor = create_trust_anchor(common_name="root", now=NOW - dt.timedelta(days=30))
    issuer = create_issuer(
        anchor, common_name="identity.gossamer.cluster.local",
        now=NOW - dt.timedelta(days=20), lifetime=dt.timedelta(days=1),
    )  # fmt: skip
    from gossamer_cli.manifests_certs import IdentityPems

    pems = IdentityPems(
        certificates_to_pem([anchor.certificate]).decode(),
        certificates_to_pem([issuer.certificate]).decode(),
        private_key_to_pem(issuer.private_key).decode(),
    )
    with pytest.raises(CertificateInputError, match="does not verify"):
        check_identity(pems, namespace="gossamer", trust_domain="cluster.local", now=NOW)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "identity.issuer.scheme=x509"], "identity.issuer.scheme must be one of"),
        (["--set", "proxyInjector.failurePolicy=Maybe"], "failurePolicy must be Ignore or Fail"),
        (["--set", "controllerReplicas=0"], "controllerReplicas must be an integer"),
        (["--set", "proxyInit.iptablesMode=ebpf"], "iptablesMode must be nft, legacy or plain"),
        (["--set", "novalue"], "expected key.path=value"),
        (["--set", "proxy.logLevel=debug", "--set", "proxy.logLevel.x=1"], "already set"),
    ],
)
def test_bad_values_are_refused(args: list[str], message: str) -> None:
    code, out = install(*args)
    assert code == 1
    assert message in out


def test_set_parsing_and_merge() -> None:
    tree = parse_set(["a.b=1", "a.c=true", "d=x", "e=null"])
    assert tree == {"a": {"b": 1, "c": True}, "d": "x", "e": None}
    assert merge({"a": {"b": 0, "z": 9}}, tree)["a"] == {"b": 1, "c": True, "z": 9}
    with pytest.raises(ValuesError):
        parse_set(["=1"])


def test_uninstall_lists_names_webhook_first_crds_last() -> None:
    result = CliRunner().invoke(cli, ["uninstall"])
    assert result.exit_code == 0, result.output
    docs = [d for d in yaml.safe_load_all(result.output) if d]
    assert docs[0]["kind"] == "MutatingWebhookConfiguration"
    assert docs[-1]["kind"] == "CustomResourceDefinition"
    assert all(set(d) == {"apiVersion", "kind", "metadata"} for d in docs)
    assert ("Namespace", "gossamer") in {(d["kind"], d["metadata"]["name"]) for d in docs}
    kept = CliRunner().invoke(cli, ["uninstall", "--keep-crds"])
    assert "CustomResourceDefinition" not in kept.output
