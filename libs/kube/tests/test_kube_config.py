"""kubeconfig and in-cluster parsing: inline data, file paths, and every malformed shape."""

from __future__ import annotations

import base64
import datetime as dt
import ssl
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gossamer_kube.config import KubeConfig
from gossamer_kube.errors import KubeConfigError


def _self_signed(cn: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


CA_PEM, _ = _self_signed("test-ca")
CERT_PEM, KEY_PEM = _self_signed("admin")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _doc(cluster: dict[str, Any], user: dict[str, Any], **ctx: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "test",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u", **ctx}}],
    }


def test_inline_base64_data() -> None:
    doc = _doc(
        {"server": "https://127.0.0.1:6443/", "certificate-authority-data": _b64(CA_PEM)},
        {"client-certificate-data": _b64(CERT_PEM), "client-key-data": _b64(KEY_PEM)},
        namespace="team-a",
    )
    cfg = KubeConfig.from_kubeconfig_dict(doc)
    assert cfg.server == "https://127.0.0.1:6443"
    assert cfg.ca_data == CA_PEM
    assert cfg.client_cert_data == CERT_PEM
    assert cfg.client_key_data == KEY_PEM
    assert cfg.namespace == "team-a"
    ctx = cfg.ssl_context()
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert len(ctx.get_ca_certs()) == 1


def test_file_paths_relative_to_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_bytes(CA_PEM)
    (tmp_path / "pki" / "admin.crt").write_bytes(CERT_PEM)
    (tmp_path / "pki" / "admin.key").write_bytes(KEY_PEM)
    doc = _doc(
        {"server": "https://127.0.0.1:6443", "certificate-authority": "pki/ca.crt"},
        {"client-certificate": "pki/admin.crt", "client-key": "pki/admin.key"},
    )
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    cfg = KubeConfig.from_kubeconfig(path)
    assert (cfg.ca_data, cfg.client_cert_data, cfg.client_key_data) == (CA_PEM, CERT_PEM, KEY_PEM)
    assert cfg.namespace == "default"
    assert isinstance(cfg.ssl_context(), ssl.SSLContext)


def test_token_and_token_file(tmp_path: Path) -> None:
    cfg = KubeConfig.from_kubeconfig_dict(
        _doc({"server": "https://k:443", "insecure-skip-tls-verify": True}, {"token": "abc"})
    )
    assert cfg.token == "abc"
    assert "abc" not in repr(cfg)
    ctx = cfg.ssl_context()
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_NONE
    cfg2 = KubeConfig.from_kubeconfig_dict(
        _doc({"server": "https://k:443"}, {"tokenFile": "tok"}), base_dir=tmp_path
    )
    assert cfg2.token_file == str(tmp_path / "tok")


def test_explicit_context_overrides_current() -> None:
    doc = _doc({"server": "https://a:1"}, {})
    doc["clusters"].append({"name": "other", "cluster": {"server": "https://b:2"}})
    doc["contexts"].append({"name": "second", "context": {"cluster": "other"}})
    assert KubeConfig.from_kubeconfig_dict(doc, context="second").server == "https://b:2"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("current-context"), "no current-context"),
        (lambda d: d.update({"current-context": "nope"}), "no context named 'nope'"),
        (lambda d: d["clusters"].clear(), "no cluster named 'c'"),
        (lambda d: d["clusters"][0]["cluster"].pop("server"), "has no server"),
        (lambda d: d["clusters"][0]["cluster"].update(server="ftp://x"), "http(s) URL"),
        (lambda d: d.update({"users": "oops"}), "users must be a list"),
        (
            lambda d: d["clusters"][0]["cluster"].update({"certificate-authority-data": "%%%"}),
            "not valid base64",
        ),
        (
            lambda d: d["clusters"][0]["cluster"].update({"certificate-authority": "missing.crt"}),
            "cannot read certificate-authority",
        ),
        (lambda d: d["users"][0]["user"].update(exec={"command": "aws"}), "exec apiVersion"),
        (
            lambda d: d["users"][0]["user"].update({"auth-provider": {"name": "gcp"}}),
            "auth-provider plugins were removed",
        ),
        (lambda d: d["users"][0]["user"].update(username="a", password="b"), "basic auth"),
        (
            lambda d: d["users"][0]["user"].update({"client-certificate-data": _b64(CERT_PEM)}),
            "needs its key",
        ),
        (lambda d: d["users"][0]["user"].update(token=5), "token must be a string"),
    ],
)
def test_malformed_kubeconfig_is_a_clear_error(tmp_path: Path, mutate: Any, message: str) -> None:
    doc = _doc({"server": "https://127.0.0.1:6443"}, {})
    mutate(doc)
    with pytest.raises(KubeConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        KubeConfig.from_kubeconfig_dict(doc, base_dir=tmp_path)


def test_unreadable_or_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="cannot read kubeconfig"):
        KubeConfig.from_kubeconfig(tmp_path / "absent")
    bad = tmp_path / "bad"
    bad.write_text("clusters: [unclosed")
    with pytest.raises(KubeConfigError, match="not valid YAML"):
        KubeConfig.from_kubeconfig(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(KubeConfigError, match="mapping at the top level"):
        KubeConfig.from_kubeconfig(bad)


def test_bad_pem_material_fails_when_building_tls() -> None:
    cfg = KubeConfig(server="https://k:1", ca_data=b"not a cert")
    with pytest.raises(KubeConfigError, match="no PEM certificate"):
        cfg.ssl_context()
    cfg = KubeConfig(server="https://k:1", client_cert_data=CERT_PEM, client_key_data=b"junk")
    with pytest.raises(KubeConfigError, match="not a valid PEM pair"):
        cfg.ssl_context()


def test_in_cluster(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tkn\n")
    (tmp_path / "ca.crt").write_bytes(CA_PEM)
    (tmp_path / "namespace").write_text("gossamer\n")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    cfg = KubeConfig.in_cluster(env, sa_dir=tmp_path)
    assert cfg.server == "https://[fd00::1]:443"
    assert cfg.token_file == str(tmp_path / "token")
    assert cfg.namespace == "gossamer"
    assert cfg.ca_data == CA_PEM


def test_in_cluster_errors(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="not running in a cluster"):
        KubeConfig.in_cluster({}, sa_dir=tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(KubeConfigError, match=r"token .* does not exist"):
        KubeConfig.in_cluster(env, sa_dir=tmp_path)
    (tmp_path / "token").write_text("t")
    with pytest.raises(KubeConfigError, match="cannot read in-cluster CA"):
        KubeConfig.in_cluster(env, sa_dir=tmp_path)


def test_load_lookup_order(tmp_path: Path) -> None:
    explicit = tmp_path / "explicit"
    explicit.write_text(yaml.safe_dump(_doc({"server": "https://explicit:1"}, {})))
    env_file = tmp_path / "env"
    env_file.write_text(yaml.safe_dump(_doc({"server": "https://env:1"}, {})))
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text(yaml.safe_dump(_doc({"server": "https://home:1"}, {})))

    assert KubeConfig.load(explicit, environ={}).server == "https://explicit:1"
    env = {"KUBECONFIG": f"{tmp_path / 'missing'}:{env_file}", "HOME": str(home)}
    assert KubeConfig.load(environ=env).server == "https://env:1"
    assert KubeConfig.load(environ={"HOME": str(home)}).server == "https://home:1"
    with pytest.raises(KubeConfigError, match="none of the KUBECONFIG files"):
        KubeConfig.load(environ={"KUBECONFIG": str(tmp_path / "missing")})
    with pytest.raises(KubeConfigError, match="no kubeconfig given"):
        KubeConfig.load(environ={"HOME": str(tmp_path / "nohome")})
