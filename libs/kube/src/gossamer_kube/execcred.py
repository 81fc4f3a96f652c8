"""kubeconfig ``exec`` credential plugins (client.authentication.k8s.io), as kubectl runs them.

Managed clusters authenticate this way: ``aws eks get-token``, ``gke-gcloud-auth-plugin``,
``kubelogin``. The plugin is a command; it prints an ``ExecCredential`` whose ``status.token``
is the bearer token, valid until ``status.expirationTimestamp`` (or for as long as the
process lives when absent). Parsing is pure (:func:`parse_exec_credential`); running the
command is :func:`run_exec_plugin`. Plugins that answer with a client certificate instead of a
token are refused with a clear error.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gossamer_kube.errors import KubeConfigError

__all__ = ["ExecPlugin", "ExecToken", "parse_exec_credential", "run_exec_plugin"]

API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
#: A plugin's output beyond this is not a credential.
MAX_OUTPUT = 1 << 20
PLUGIN_TIMEOUT = 60.0


@dataclass(frozen=True)
class ExecPlugin:
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = API_VERSIONS[0]
    install_hint: str = field(default="", repr=False)

    @classmethod
    def from_user(cls, spec: Any, base_dir: Path, where: str) -> ExecPlugin:
        """The ``user.exec`` stanza of a kubeconfig, checked."""
        if not isinstance(spec, Mapping):
            raise KubeConfigError(f"{where}: exec must be a mapping")
        command = spec.get("command")
        if not isinstance(command, str) or not command:
            raise KubeConfigError(f"{where}: exec needs a command")
        api_version = spec.get("apiVersion")
        if api_version not in API_VERSIONS:
            raise KubeConfigError(
                f"{where}: exec apiVersion must be one of {', '.join(API_VERSIONS)}, "
                f"got {api_version!r}"
            )
        args = spec.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise KubeConfigError(f"{where}: exec args must be a list of strings")
        env: list[tuple[str, str]] = []
        for entry in spec.get("env") or []:
            if not (
                isinstance(entry, Mapping)
                and isinstance(entry.get("name"), str)
                and isinstance(entry.get("value"), str)
            ):
                raise KubeConfigError(f"{where}: exec env entries need a name and a value")
            env.append((entry["name"], entry["value"]))
        # As kubectl: a relative path with a slash is relative to the kubeconfig's directory.
        if "/" in command and not os.path.isabs(command):
            command = str(base_dir / command)
        hint = spec.get("installHint")
        return cls(
            command, tuple(args), tuple(env), api_version, hint if isinstance(hint, str) else ""
        )


@dataclass(frozen=True)
class ExecToken:
    token: str
    #: Wall-clock expiry (seconds since the epoch), or None: valid while the process lives.
    expires_at: float | None


def parse_exec_credential(output: bytes, api_version: str) -> ExecToken:
    """The token in a plugin's stdout; any deviation from the ExecCredential shape is an error."""
    if len(output) > MAX_OUTPUT:
        raise KubeConfigError("exec plugin printed more than 1 MiB")
    try:
        doc = json.loads(output)
    except ValueError as exc:
        raise KubeConfigError(f"exec plugin printed no JSON ExecCredential: {exc}") from None
    if not isinstance(doc, Mapping) or doc.get("kind") != "ExecCredential":
        raise KubeConfigError("exec plugin output is not an ExecCredential")
    if doc.get("apiVersion") != api_version:
        raise KubeConfigError(
            f"exec plugin answered {doc.get('apiVersion')!r}, the kubeconfig asked {api_version!r}"
        )
    status = doc.get("status")
    if not isinstance(status, Mapping):
        raise KubeConfigError("exec plugin ExecCredential has no status")
    token = status.get("token")
    if not isinstance(token, str) or not token:
        if status.get("clientCertificateData"):
            raise KubeConfigError("exec plugins returning client certificates are not supported")
        raise KubeConfigError("exec plugin ExecCredential has no status.token")
    expires_at = None
    stamp = status.get("expirationTimestamp")
    if stamp is not None:
        if not isinstance(stamp, str):
            raise KubeConfigError("exec plugin expirationTimestamp must be an RFC 3339 string")
        try:
            when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            raise KubeConfigError(
                f"exec plugin expirationTimestamp {stamp!r} is not RFC 3339"
            ) from None
        if when.tzinfo is None:
            raise KubeConfigError(f"exec plugin expirationTimestamp {stamp!r} has no time zone")
        expires_at = when.timestamp()
    return ExecToken(token, expires_at)


def run_exec_plugin(plugin: ExecPlugin, timeout: float = PLUGIN_TIMEOUT) -> ExecToken:
    """Run the plugin (non-interactively) and parse its credential."""
    info = {"apiVersion": plugin.api_version, "kind": "ExecCredential",
            "spec": {"interactive": False}}  # fmt: skip
    env = {**os.environ, **dict(plugin.env), "KUBERNETES_EXEC_INFO": json.dumps(info)}
    try:
        proc = subprocess.run(
            [plugin.command, *plugin.args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        hint = f" ({plugin.install_hint.strip()})" if plugin.install_hint else ""
        raise KubeConfigError(f"exec plugin {plugin.command!r} not found{hint}") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KubeConfigError(f"exec plugin {plugin.command!r} failed: {exc}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()[-500:]
        raise KubeConfigError(f"exec plugin {plugin.command!r} exited {proc.returncode}: {err}")
    return parse_exec_credential(proc.stdout, plugin.api_version)
