"""Where the apiserver is and how to authenticate to it: kubeconfig files and in-cluster mode.

Parsing is pure (:meth:`KubeConfig.from_kubeconfig_dict` takes the decoded YAML and the
directory relative paths are resolved against), so every malformed-input path is unit-tested.
Supported credentials are the ones Gossamer's components and tests use: client certificates
(inline ``*-data`` or file paths), bearer tokens (inline or ``tokenFile``, re-read so that
rotated projected tokens keep working) and the in-cluster service-account mount. ``exec`` credential
plugins (EKS, GKE, AKS kubeconfigs) run as kubectl runs them (:mod:`gossamer_kube.execcred`);
the removed ``auth-provider`` plugins are refused with a clear error.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gossamer_kube.errors import KubeConfigError
from gossamer_kube.execcred import ExecPlugin

__all__ = ["IN_CLUSTER_SA_DIR", "KubeConfig"]

IN_CLUSTER_SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class KubeConfig:
    """Everything needed to open an authenticated HTTPS connection to one apiserver."""

    server: str
    ca_data: bytes | None = field(default=None, repr=False)
    client_cert_data: bytes | None = field(default=None, repr=False)
    client_key_data: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    namespace: str = "default"
    exec_plugin: ExecPlugin | None = None
    """A credential plugin (``user.exec``) whose token is fetched when needed."""

    def __post_init__(self) -> None:
        if not self.server.startswith(("https://", "http://")):
            raise KubeConfigError(f"server must be an http(s) URL, got {self.server!r}")
        if (self.client_cert_data is None) != (self.client_key_data is None):
            raise KubeConfigError("a client certificate needs its key, and a key its certificate")

    # -- constructors ------------------------------------------------------------------------

    @classmethod
    def from_kubeconfig(
        cls, path: str | os.PathLike[str], context: str | None = None
    ) -> KubeConfig:
        """Load ``path`` (a kubeconfig YAML file), using ``context`` or its current-context."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise KubeConfigError(f"cannot read kubeconfig {p}: {exc.strerror}") from exc
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise KubeConfigError(f"kubeconfig {p} is not valid YAML: {exc}") from exc
        return cls.from_kubeconfig_dict(doc, base_dir=p.parent, context=context, source=str(p))

    @classmethod
    def from_kubeconfig_dict(
        cls,
        doc: Any,
        *,
        base_dir: str | os.PathLike[str] = ".",
        context: str | None = None,
        source: str = "kubeconfig",
    ) -> KubeConfig:
        """Build a config from a decoded kubeconfig document (pure apart from reading files)."""
        if not isinstance(doc, Mapping):
            raise KubeConfigError(f"{source}: expected a mapping at the top level")
        base = Path(base_dir)
        ctx_name = context or doc.get("current-context")
        if not ctx_name:
            raise KubeConfigError(f"{source}: no current-context set and no context given")
        ctx = _named(doc, "contexts", "context", ctx_name, source)
        cluster_name = ctx.get("cluster")
        if not isinstance(cluster_name, str) or not cluster_name:
            raise KubeConfigError(f"{source}: context {ctx_name!r} names no cluster")
        cluster = _named(doc, "clusters", "cluster", cluster_name, source)
        user_name = ctx.get("user")
        user: Mapping[str, Any] = {}
        if user_name:
            user = _named(doc, "users", "user", user_name, source)

        server = cluster.get("server")
        if not isinstance(server, str) or not server:
            raise KubeConfigError(f"{source}: cluster {cluster_name!r} has no server")
        where = f"{source}: cluster {cluster_name!r}"
        ca = _data_or_file(cluster, "certificate-authority", base, where)
        where = f"{source}: user {user_name!r}"
        if user.get("auth-provider"):
            raise KubeConfigError(
                f"{where}: auth-provider plugins were removed from kubectl; use the provider's "
                "exec plugin (gke-gcloud-auth-plugin, kubelogin) instead"
            )
        exec_plugin = None
        if user.get("exec"):
            exec_plugin = ExecPlugin.from_user(user["exec"], base, where)
        if user.get("username") or user.get("password"):
            raise KubeConfigError(f"{where}: basic auth is not supported by Kubernetes >= 1.19")
        cert = _data_or_file(user, "client-certificate", base, where)
        key = _data_or_file(user, "client-key", base, where)
        token = user.get("token")
        if token is not None and not isinstance(token, str):
            raise KubeConfigError(f"{where}: token must be a string")
        token_file = user.get("tokenFile")
        if token_file is not None:
            if not isinstance(token_file, str):
                raise KubeConfigError(f"{where}: tokenFile must be a string")
            token_file = str(base / token_file)
        namespace = ctx.get("namespace") or "default"
        try:
            return cls(
                server=server.rstrip("/"),
                ca_data=ca,
                client_cert_data=cert,
                client_key_data=key,
                token=token or None,
                token_file=token_file,
                insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
                tls_server_name=cluster.get("tls-server-name") or None,
                namespace=str(namespace),
                exec_plugin=exec_plugin,
            )
        except KubeConfigError as exc:
            raise KubeConfigError(f"{source}: {exc}") from None

    @classmethod
    def in_cluster(
        cls,
        environ: Mapping[str, str] | None = None,
        sa_dir: str | os.PathLike[str] = IN_CLUSTER_SA_DIR,
    ) -> KubeConfig:
        """The pod's own service account, as mounted by the kubelet.

        The token is read from its file on use (not copied here) because bound tokens are
        rotated by the kubelet well before they expire.
        """
        env = os.environ if environ is None else environ
        host = env.get("KUBERNETES_SERVICE_HOST")
        port = env.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise KubeConfigError(
                "not running in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set"
            )
        sa = Path(sa_dir)
        token_path = sa / "token"
        if not token_path.is_file():
            raise KubeConfigError(f"in-cluster token {token_path} does not exist")
        try:
            ca = (sa / "ca.crt").read_bytes()
        except OSError as exc:
            raise KubeConfigError(f"cannot read in-cluster CA {sa / 'ca.crt'}: {exc}") from exc
        try:
            namespace = (sa / "namespace").read_text().strip() or "default"
        except OSError:
            namespace = "default"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return cls(
            server=f"https://{host}:{port}",
            ca_data=ca,
            token_file=str(token_path),
            namespace=namespace,
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> KubeConfig:
        """The usual lookup: ``path``, else ``$KUBECONFIG``, else in-cluster, else ~/.kube/config.

        Only the first existing file of a colon-separated ``$KUBECONFIG`` is read; merging
        several files is a kubectl convenience Gossamer's components do not need.
        """
        if path is not None:
            return cls.from_kubeconfig(path)
        env = os.environ if environ is None else environ
        listed = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
        for candidate in listed:
            if Path(candidate).is_file():
                return cls.from_kubeconfig(candidate)
        if listed:
            raise KubeConfigError(f"none of the KUBECONFIG files exist: {listed}")
        if env.get("KUBERNETES_SERVICE_HOST"):
            return cls.in_cluster(env)
        home = Path(env.get("HOME", str(Path.home())))
        default = home / ".kube" / "config"
        if default.is_file():
            return cls.from_kubeconfig(default)
        raise KubeConfigError("no kubeconfig given, KUBECONFIG unset, not in a cluster")

    # -- TLS ---------------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context, or ``None`` for a plain-http server."""
        if self.server.startswith("http://"):
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.insecure_skip_tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_data is not None:
            ctx = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cadata=_pem_text(self.ca_data)
            )
        if self.client_cert_data is not None and self.client_key_data is not None:
            _load_cert_chain(ctx, self.client_cert_data, self.client_key_data)
        return ctx


def _named(
    doc: Mapping[str, Any], section: str, key: str, name: str, source: str
) -> Mapping[str, Any]:
    entries = doc.get(section) or []
    if not isinstance(entries, list):
        raise KubeConfigError(f"{source}: {section} must be a list")
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("name") == name:
            body = entry.get(key)
            if not isinstance(body, Mapping):
                raise KubeConfigError(f"{source}: {key} {name!r} has no {key} mapping")
            return body
    raise KubeConfigError(f"{source}: no {key} named {name!r}")


def _data_or_file(
    entry: Mapping[str, Any], field_name: str, base: Path, where: str
) -> bytes | None:
    """Resolve ``<field>-data`` (base64) or ``<field>`` (a path relative to the kubeconfig)."""
    inline = entry.get(f"{field_name}-data")
    if inline:
        if not isinstance(inline, str):
            raise KubeConfigError(f"{where}: {field_name}-data must be a base64 string")
        try:
            return base64.b64decode(inline, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KubeConfigError(f"{where}: {field_name}-data is not valid base64") from exc
    path = entry.get(field_name)
    if path:
        if not isinstance(path, str):
            raise KubeConfigError(f"{where}: {field_name} must be a file path")
        full = base / path
        try:
            return full.read_bytes()
        except OSError as exc:
            raise KubeConfigError(
                f"{where}: cannot read {field_name} {full}: {exc.strerror}"
            ) from exc
    return None


def _pem_text(data: bytes) -> str:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise KubeConfigError("certificate authority data is not PEM text") from exc
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise KubeConfigError("certificate authority data holds no PEM certificate")
    return text


def _load_cert_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """Load an in-memory certificate and key: :mod:`ssl` only reads them from files.

    The key goes to a private (0600) temporary file that is removed as soon as it is loaded.
    """
    fd, tmp = tempfile.mkstemp(prefix="gossamer-kube-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(cert.rstrip(b"\n") + b"\n" + key)
        try:
            ctx.load_cert_chain(tmp)
        except ssl.SSLError as exc:
            raise KubeConfigError(
                f"client certificate/key are not a valid PEM pair: {exc}"
            ) from exc
    finally:
        os.unlink(tmp)
