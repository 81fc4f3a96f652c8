"""kubeconfig ``exec`` credential plugins (EKS, GKE, AKS kubeconfigs): parsed, run, cached,
renewed before expiry and after a 401. Before, every such kubeconfig was refused."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from gossamer_kube.client import EXEC_REFRESH_MARGIN, _TokenSource
from gossamer_kube.config import KubeConfig
from gossamer_kube.errors import KubeConfigError
from gossamer_kube.execcred import ExecPlugin, parse_exec_credential, run_exec_plugin

V1 = "client.authentication.k8s.io/v1"


def write_plugin(tmp_path: Path, status: dict[str, Any], api_version: str = V1) -> Path:
    """A plugin script that counts its runs and prints an ExecCredential with ``status``."""
    script = tmp_path / "plugin.py"
    counter = tmp_path / "runs"
    credential = {"apiVersion": api_version, "kind": "ExecCredential", "status": status}
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, pathlib, sys\n"
        f"c = pathlib.Path({str(counter)!r})\n"
        "c.write_text(str(int(c.read_text() or 0) + 1) if c.exists() else '1')\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['spec']['interactive'] is False, info\n"
        "assert os.environ.get('PLUGIN_ENV') == 'set', 'exec env not passed'\n"
        f"print(json.dumps({credential!r}))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def runs(tmp_path: Path) -> int:
    return int((tmp_path / "runs").read_text())


def kubeconfig(tmp_path: Path, command: str) -> dict[str, Any]:
    user = {
        "exec": {
            "apiVersion": V1,
            "command": command,
            "args": [],
            "env": [{"name": "PLUGIN_ENV", "value": "set"}],
            "interactiveMode": "Never",
        }
    }
    return {
        "current-context": "eks",
        "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "eks", "context": {"cluster": "c", "user": "u"}}],
    }


def test_kubeconfig_with_an_exec_user_loads_and_yields_the_plugin_token(tmp_path: Path) -> None:
    write_plugin(tmp_path, {"token": "tok-1"})
    # a relative command with a slash is relative to the kubeconfig's directory (as kubectl)
    config = KubeConfig.from_kubeconfig_dict(kubeconfig(tmp_path, "./plugin.py"), base_dir=tmp_path)
    assert config.exec_plugin is not None
    assert config.exec_plugin.command == str(tmp_path / "plugin.py")
    tokens = _TokenSource(config, wall_clock=lambda: 1000.0)
    assert tokens.token(0.0) == "tok-1"
    assert tokens.token(0.0) == "tok-1"
    assert runs(tmp_path) == 1, "a token without expiry is cached"
    tokens.forget_plugin_token()  # what a 401 does
    assert tokens.token(0.0) == "tok-1"
    assert runs(tmp_path) == 2


def test_token_is_renewed_before_it_expires(tmp_path: Path) -> None:
    write_plugin(tmp_path, {"token": "tok", "expirationTimestamp": "2030-01-01T00:00:00Z"})
    config = KubeConfig.from_kubeconfig_dict(kubeconfig(tmp_path, str(tmp_path / "plugin.py")))
    expiry = 1893456000.0  # 2030-01-01T00:00:00Z
    now = [expiry - 3600]
    tokens = _TokenSource(config, wall_clock=lambda: now[0])
    tokens.token(0.0)
    now[0] = expiry - EXEC_REFRESH_MARGIN - 1
    tokens.token(0.0)
    assert runs(tmp_path) == 1
    now[0] = expiry - EXEC_REFRESH_MARGIN + 1
    tokens.token(0.0)
    assert runs(tmp_path) == 2


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (b"not json", "no JSON ExecCredential"),
        (b"[]", "not an ExecCredential"),
        (json.dumps({"kind": "ExecCredential", "apiVersion": V1}).encode(), "has no status"),
        (
            json.dumps({"kind": "ExecCredential", "apiVersion": V1 + "beta1",
                        "status": {"token": "x"}}).encode(),
            "the kubeconfig asked",
        ),
        (
            json.dumps({"kind": "ExecCredential", "apiVersion": V1,
                        "status": {"clientCertificateData": "PEM"}}).encode(),
            "client certificates are not supported",
        ),
        (
            json.dumps({"kind": "ExecCredential", "apiVersion": V1,
                        "status": {"token": "x", "expirationTimestamp": "tomorrow"}}).encode(),
            "not RFC 3339",
        ),
        (b" " * (1 << 20) + b"{}", "more than 1 MiB"),
    ],
)  # fmt: skip
def test_bad_plugin_output_is_a_clear_error(output: bytes, message: str) -> None:
    with pytest.raises(KubeConfigError, match=message):
        parse_exec_credential(output, V1)


def test_missing_or_failing_plugin_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match=r"not found \(install the aws cli\)"):
        run_exec_plugin(ExecPlugin(str(tmp_path / "nope"), install_hint="install the aws cli"))
    with pytest.raises(KubeConfigError, match="exited 1: boom"):
        run_exec_plugin(ExecPlugin(sys.executable, ("-c", "import sys; sys.exit('boom')")))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"apiVersion": V1}, "needs a command"),
        ({"apiVersion": "v1", "command": "x"}, "exec apiVersion"),
        ({"apiVersion": V1, "command": "x", "args": "a b"}, "args must be a list"),
        ({"apiVersion": V1, "command": "x", "env": [{"name": "A"}]}, "need a name and a value"),
    ],
)
def test_malformed_exec_stanza_is_refused(
    tmp_path: Path, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(KubeConfigError, match=message):
        ExecPlugin.from_user(spec, tmp_path, "kubeconfig")
