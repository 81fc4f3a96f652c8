"""Gossamer's control plane as local processes: identity, destination and the injector.

They run inside the node namespace: identity and destination listen on the node's bridge
address, which pods reach under the usual service names (local mode's /etc/hosts maps
``gossamer-identity.gossamer.svc.cluster.local`` and friends to the node), and the injector
listens on the node's loopback, where the apiserver calls it. The webhook is registered with
the apiserver exactly as on a cluster, with a URL clientConfig and its caBundle.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from gossamer_inject.webhook_config import WebhookTarget, render_webhook_config
from gossamer_kube.client import KubeApiError, KubeClient
from gossamer_kube.resources import (
    CONFIGMAPS,
    MUTATINGWEBHOOKCONFIGURATIONS,
    NAMESPACES,
    SECRETS,
    SERVICEACCOUNTS,
    ResourceRef,
)
from gossamer_tls import (
    Issuer,
    certificates_to_pem,
    create_trust_anchor,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    private_key_to_pem,
)

from gossamer_cli import __version__
from gossamer_cli import manifests as m
from gossamer_cli.check import probe_ready
from gossamer_cli.check_rules import LOCAL_MODE_ANNOTATION, admin_address_annotation
from gossamer_cli.diagnostics_cmd import local_grpc_address_annotation
from gossamer_cli.manifests_certs import WEBHOOK_CERT_LIFETIME
from gossamer_cli.manifests_values import ChartValues, chart_app_version, chart_values
from gossamer_cli.viz.tap_identity import tap_identity

CONTROL_PLANE_NAMESPACE = "gossamer"
TRUST_DOMAIN = "cluster.local"
IDENTITY_PORT = 8080
DESTINATION_PORT = 8086
POLICY_PORT = 8090
INJECTOR_PORT = 8443
WEBHOOK_HOST = "localhost"
#: As long as an install's webhook certificate, so ``gossamer check`` judges both alike.
WEBHOOK_LIFETIME = WEBHOOK_CERT_LIFETIME
ADMIN_PORTS = {"identity": 9990, "destination": 9996, "injector": 9995}
#: ``gossamer_cli.manifests`` component name of each local process.
COMPONENT_OF = {"identity": "identity", "destination": "destination", "injector": "proxy-injector"}
CLUSTERROLES = ResourceRef("rbac.authorization.k8s.io", "v1", "clusterroles", False, "ClusterRole")
CLUSTERROLEBINDINGS = ResourceRef(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", False, "ClusterRoleBinding"
)
#: What an install renders that local mode registers too: configuration, identity material and
#: RBAC. Deployments, Services and PDBs are left out (the components run as processes), and
#: so is the webhook configuration (local mode's calls a URL; see :meth:`ControlPlane.register`).
CONFIGURATION_KINDS: dict[str, ResourceRef] = {
    "Namespace": NAMESPACES,
    "ConfigMap": CONFIGMAPS,
    "Secret": SECRETS,
    "ServiceAccount": SERVICEACCOUNTS,
    "ClusterRole": CLUSTERROLES,
    "ClusterRoleBinding": CLUSTERROLEBINDINGS,
}


def service_hosts(node_address: str) -> dict[str, str]:
    """The control plane's service names, as pods resolve them in local mode."""
    names = ["gossamer-identity", "gossamer-dst", "gossamer-policy", "gossamer-sp-validator"]
    return {f"{n}.{CONTROL_PLANE_NAMESPACE}.svc.{TRUST_DOMAIN}": node_address for n in names}


@dataclass
class Process:
    """One supervised component: restarted if it dies, as a Deployment's pod would be."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    proc: asyncio.subprocess.Process
    log: Path
    restarts: int = 0
    supervisor: asyncio.Task[None] | None = None


@dataclass
class ControlPlane:
    state_dir: Path
    kubeconfig: Path
    node_address: str
    proxy_image: str = "gossamer/proxy"
    init_image: str = "gossamer/proxy-init"
    #: Local mode runs images from the runtime venv, so the tag only labels the pods; it is
    #: the installed version, so `gossamer check --proxy` finds the proxies current.
    proxy_version: str = __version__
    processes: list[Process] = field(default_factory=list)
    stopping: bool = False

    @property
    def trust_anchors(self) -> Path:
        return self.state_dir / "identity" / "ca-bundle.crt"

    def write_pki(self, now: dt.datetime) -> None:
        """A fresh trust anchor and issuer (as `gossamer install` makes), and the webhook's cert.

        The apiserver calls the webhook at ``https://localhost:8443``, so its serving
        certificate names ``localhost``, signed by a CA of its own that the caBundle carries.
        """
        material = generate_trust_anchor_and_issuer(
            trust_domain=TRUST_DOMAIN, control_plane_namespace=CONTROL_PLANE_NAMESPACE, now=now
        )
        issuer_dir = self.state_dir / "identity" / "issuer"
        issuer_dir.mkdir(parents=True, exist_ok=True)
        self.trust_anchors.write_bytes(certificates_to_pem([material.trust_anchor.certificate]))
        _write_secret(issuer_dir, material.issuer.certificate, material.issuer.private_key)
        webhook_ca = create_trust_anchor(
            common_name="gossamer local webhook CA", now=now, lifetime=WEBHOOK_LIFETIME
        )
        key = generate_private_key()
        serving = Issuer(
            certificate=webhook_ca.certificate, private_key=webhook_ca.private_key
        ).sign_leaf(key.public_key(), WEBHOOK_HOST, now=now, lifetime=WEBHOOK_LIFETIME)
        tls = self.state_dir / "injector"
        tls.mkdir(parents=True, exist_ok=True)
        (tls / "ca.crt").write_bytes(certificates_to_pem([webhook_ca.certificate]))
        _write_secret(tls, serving.certificate, key)

    async def start(self) -> None:
        py = sys.executable
        addr = self.node_address
        kubeconfig = str(self.kubeconfig)
        await self._spawn(
            "identity",
            [
                py, "-m", "gossamer_identity",
                "--trust-anchors-path", str(self.trust_anchors),
                "--issuer", str(self.state_dir / "identity" / "issuer"),
                "--addr", f"{addr}:{IDENTITY_PORT}",
                "--admin-addr", f"127.0.0.1:{ADMIN_PORTS['identity']}",
                "--controller-namespace", CONTROL_PLANE_NAMESPACE,
                "--identity-trust-domain", TRUST_DOMAIN,
                "--kubeconfig", kubeconfig,
            ],
        )  # fmt: skip
        await self._spawn(
            "destination",
            [
                py, "-m", "gossamer_destination",
                "--addr", f"{addr}:{DESTINATION_PORT}",
                "--policy-addr", f"{addr}:{POLICY_PORT}",
                "--admin-addr", f"127.0.0.1:{ADMIN_PORTS['destination']}",
                "--controller-namespace", CONTROL_PLANE_NAMESPACE,
                "--identity-trust-domain", TRUST_DOMAIN,
                "--kubeconfig", kubeconfig,
            ],
        )  # fmt: skip
        tls = self.state_dir / "injector"
        await self._spawn(
            "injector",
            [
                py, "-m", "gossamer_injector",
                "--listen", f"127.0.0.1:{INJECTOR_PORT}",
                "--admin-listen", f"127.0.0.1:{ADMIN_PORTS['injector']}",
                "--tls-cert-file", str(tls / "crt.pem"),
                "--tls-key-file", str(tls / "key.pem"),
                "--trust-anchors-file", str(self.trust_anchors),
                "--kubeconfig", kubeconfig,
                "--control-plane-namespace", CONTROL_PLANE_NAMESPACE,
                "--trust-domain", TRUST_DOMAIN,
                "--proxy-image", self.proxy_image,
                "--init-image", self.init_image,
                "--proxy-version", self.proxy_version,
                "--control-plane-tls=false",
                # Every local proxy may be tapped by the viz tap identity (`gossamer viz tap`).
                "--tap-svc-name", tap_identity(CONTROL_PLANE_NAMESPACE, TRUST_DOMAIN),
            ],
        )  # fmt: skip

    async def _spawn(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> None:
        log = self.state_dir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        proc = await self._exec(name, tuple(argv), env or {}, log)
        process = Process(name, tuple(argv), env or {}, proc, log)
        process.supervisor = asyncio.create_task(self._supervise(process))
        self.processes.append(process)

    async def _exec(
        self, name: str, argv: tuple[str, ...], env: Mapping[str, str], log: Path
    ) -> asyncio.subprocess.Process:
        with log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdout=out,
                stderr=out,
                env={**os.environ, **env},
                start_new_session=True,
            )
        # Tests kill components by this pid to check that traffic survives a restart.
        (self.state_dir / f"{name}.pid").write_text(str(proc.pid))
        return proc

    async def _supervise(self, process: Process) -> None:
        """Restart a component that exits, with a short backoff, until the plane stops."""
        while True:
            code = await process.proc.wait()
            if self.stopping:
                return
            process.restarts += 1
            structlog.get_logger("gossamer.dev").warning(
                "control-plane component exited; restarting",
                component=process.name,
                code=code,
                restarts=process.restarts,
            )
            await asyncio.sleep(min(2.0 ** min(process.restarts, 4) / 4, 5.0))
            if self.stopping:
                return
            process.proc = await self._exec(process.name, process.argv, process.env, process.log)

    async def wait_ready(self, limit: float = 60.0) -> None:
        """Every component answers 200 on its admin /ready."""
        deadline = asyncio.get_running_loop().time() + limit
        pending = dict(ADMIN_PORTS)
        while pending:
            for p in self.processes:
                if p.proc.returncode is not None:
                    tail = p.log.read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"{p.name} exited ({p.proc.returncode}):\n{tail}")
            for name, port in list(pending.items()):
                if await probe_ready(f"127.0.0.1:{port}", limit=2.0) is None:
                    del pending[name]
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"control plane not ready after {limit}s: {sorted(pending)}")
            await asyncio.sleep(0.2)

    def configuration(self) -> list[dict[str, Any]]:
        """The objects ``gossamer install`` would render for this control plane's certificates.

        Rendered by the install renderer itself, so ``gossamer check`` judges local mode by the
        same objects as a cluster; the namespace and ``gossamer-config`` say it is local mode
        and where each component's admin server answers (there are no pods to ask about).
        """
        injector = self.state_dir / "injector"
        certs = {
            "identityTrustAnchorsPEM": self.trust_anchors.read_text(),
            "identityTrustDomain": TRUST_DOMAIN,
            "identity": {
                "issuer": {
                    "tls": {
                        "crtPEM": (self.state_dir / "identity" / "issuer" / "crt.pem").read_text(),
                        "keyPEM": (self.state_dir / "identity" / "issuer" / "key.pem").read_text(),
                    }
                }
            },
            "proxyInjector": {
                "crtPEM": (injector / "crt.pem").read_text(),
                "keyPEM": (injector / "key.pem").read_text(),
                "caBundle": (injector / "ca.crt").read_text(),
            },
        }
        values = ChartValues.parse(
            chart_values(overrides=[{"installNamespace": True}, certs]),
            namespace=CONTROL_PLANE_NAMESPACE,
            app_version=chart_app_version(),
        )
        local = {LOCAL_MODE_ANNOTATION: "true"}
        for process, port in ADMIN_PORTS.items():
            local[admin_address_annotation(COMPONENT_OF[process])] = f"127.0.0.1:{port}"
        # `gossamer diagnostics` dials these in place of Linkerd's port-forward.
        grpc_address = local_grpc_address_annotation
        local[grpc_address("destination")] = f"{self.node_address}:{DESTINATION_PORT}"
        local[grpc_address("policy")] = f"{self.node_address}:{POLICY_PORT}"
        objects = []
        for obj in m.control_plane(values):
            if obj["kind"] not in CONFIGURATION_KINDS:
                continue
            if obj["kind"] == "Namespace" or obj["metadata"]["name"] == m.CONFIG_MAP:
                meta = obj["metadata"]
                meta["annotations"] = {**meta.get("annotations", {}), **local}
            objects.append(obj)
        return objects

    def webhook_configuration(self) -> dict[str, Any]:
        """As an install's, but calling the injector's URL on the node's loopback."""
        return render_webhook_config(
            ca_bundle_pem=(self.state_dir / "injector" / "ca.crt").read_bytes(),
            control_plane_namespace=CONTROL_PLANE_NAMESPACE,
            target=WebhookTarget(url=f"https://{WEBHOOK_HOST}:{INJECTOR_PORT}/", service_name=None),
        )

    async def register(self, client: KubeClient) -> None:
        """What an install registers (see :meth:`configuration`) and the webhook configuration.

        Replaces objects left by an earlier run, so they always match this run's certificates.
        """
        for obj in self.configuration():
            ref = CONFIGURATION_KINDS[obj["kind"]]
            namespace = obj["metadata"].get("namespace") if ref.namespaced else None
            name = obj["metadata"]["name"]
            try:
                await client.create(ref, obj, namespace=namespace)
            except KubeApiError as exc:
                if exc.status != 409:
                    raise
                await client.patch(ref, name, obj, namespace=namespace)
        config = self.webhook_configuration()
        name = config["metadata"]["name"]
        with contextlib.suppress(KubeApiError):
            await client.delete(MUTATINGWEBHOOKCONFIGURATIONS, name)
        await client.create(MUTATINGWEBHOOKCONFIGURATIONS, config)

    async def stop(self, grace: float = 10.0) -> None:
        self.stopping = True
        for p in reversed(self.processes):
            if p.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.proc.pid, signal.SIGTERM)
        for p in self.processes:
            try:
                await asyncio.wait_for(p.proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.proc.pid, signal.SIGKILL)
                await p.proc.wait()
        for p in self.processes:
            if p.supervisor is not None:
                p.supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await p.supervisor
        self.processes.clear()


def _write_secret(directory: Path, certificate: Any, key: Any) -> None:
    """``crt.pem`` and ``key.pem``, as Linkerd's identity Secret mounts them (key 0600)."""
    (directory / "crt.pem").write_bytes(certificates_to_pem([certificate]))
    key_path = directory / "key.pem"
    key_path.write_bytes(private_key_to_pem(key))
    os.chmod(key_path, 0o600)
