"""Gossamer's control plane as local processes: identity, destination and the injector.

Identity and destination run meshed, as on a cluster: each in a sandbox of its own (a pod's
network namespace on the node's bridge, with its own address, see
:meth:`NodeLayout.control_plane_address`) next to the ``linkerd-init`` and ``linkerd-proxy``
containers that ``gossamer install`` renders for its Deployment. proxy-init writes the
sandbox's iptables, the proxy runs as uid 2102 with the rendered environment, and the
component listens on ``0.0.0.0`` behind it. So pods reach identity, destination and policy
over mTLS, under the usual service names (local mode's /etc/hosts maps
``gossamer-identity.gossamer.svc.cluster.local`` and friends to the sandboxes), with
``LINKERD2_PROXY_*_SVC_NAME`` set; the identity proxy certifies through ``localhost.:8080``
and the destination proxy discovers through ``localhost.:8086``, exactly as the chart's do.
The components reach the kube-apiserver on the node's bridge address, bypassing their proxy
(proxy-init's ignored outbound ports, as the chart's 443/6443).

The injector stays on the node's loopback, where the apiserver calls it. The webhook is
registered with the apiserver exactly as on a cluster, with a URL clientConfig and its
caBundle.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import signal
import sys
import uuid
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
from gossamer_cli.dev import images, launch, probes
from gossamer_cli.dev.layout import CONTROL_PLANE_SANDBOXES, NodeLayout, render_hosts
from gossamer_cli.dev.pod import NETNS_ETC, create_netns, resolve_env
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


#: Each Service of the control plane, and the sandbox (component) behind it.
SERVICE_COMPONENTS = {
    "gossamer-identity": "identity",
    "gossamer-dst": "destination",
    "gossamer-policy": "destination",
    "gossamer-sp-validator": "destination",
}
#: The rendered Deployment of each meshed component.
SANDBOX_COMPONENTS = {"identity": m.IDENTITY, "destination": m.DESTINATION}
#: The identity token of each sandbox's proxy lives this long, and is renewed at 80%.
TOKEN_LIFETIME = 86400
PROXY_ADMIN_PORT = 4191


def service_hosts(layout: NodeLayout) -> dict[str, str]:
    """The control plane's service names, as pods resolve them in local mode."""
    return {
        f"{name}.{CONTROL_PLANE_NAMESPACE}.svc.{TRUST_DOMAIN}": layout.control_plane_address(c)
        for name, c in SERVICE_COMPONENTS.items()
    }


@dataclass(frozen=True)
class Sandbox:
    """A meshed component's pod, as local mode runs it (see the module docstring)."""

    component: str
    netns: str
    veth: str
    ip: str
    #: The pod the rendered Deployment would create here: env and probes come from it.
    pod: Mapping[str, Any]
    directory: Path

    def container(self, name: str) -> Mapping[str, Any]:
        spec = self.pod["spec"]
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            if c["name"] == name:
                return dict(c)
        raise KeyError(f"{self.component} has no container {name!r}")


def sandbox_pod(
    values: ChartValues, component: str, *, ip: str, node_name: str, uid: str
) -> dict[str, Any]:
    """The pod of ``component``'s rendered Deployment, placed on the node with ``ip`` (pure)."""
    deployment = m.deployment(values, SANDBOX_COMPONENTS[component])
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **template["metadata"],
            "name": f"{deployment['metadata']['name']}-local",
            "namespace": deployment["metadata"]["namespace"],
            "uid": uid,
        },
        "spec": {**template["spec"], "nodeName": node_name},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
    }


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
    layout: NodeLayout
    #: Where proxy and proxy-init run from (what local mode's pods run).
    runtime_venv: Path
    #: The kube-apiserver's port on the node's bridge address; the sandboxes' proxies let
    #: it bypass them.
    apiserver_port: int
    proxy_image: str = "gossamer/proxy"
    init_image: str = "gossamer/proxy-init"
    #: Local mode runs images from the runtime venv, so the tag only labels the pods; it is
    #: the installed version, so `gossamer check --proxy` finds the proxies current.
    proxy_version: str = __version__
    processes: list[Process] = field(default_factory=list)
    sandboxes: list[Sandbox] = field(default_factory=list)
    stopping: bool = False
    _token_task: asyncio.Task[None] | None = None

    @property
    def node_address(self) -> str:
        return self.layout.node_address

    def admin_address(self, process: str) -> str:
        """Where a component's admin server answers, seen from the node."""
        if process in CONTROL_PLANE_SANDBOXES:
            return f"{self.layout.control_plane_address(process)}:{ADMIN_PORTS[process]}"
        return f"127.0.0.1:{ADMIN_PORTS[process]}"

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

    def values(self) -> ChartValues:
        """The chart values of this control plane's install, with its certificates."""
        injector = self.state_dir / "injector"
        issuer = self.state_dir / "identity" / "issuer"
        certs = {
            "identityTrustAnchorsPEM": self.trust_anchors.read_text(),
            "identityTrustDomain": TRUST_DOMAIN,
            "identity": {
                "issuer": {
                    "tls": {
                        "crtPEM": (issuer / "crt.pem").read_text(),
                        "keyPEM": (issuer / "key.pem").read_text(),
                    }
                }
            },
            "proxyInjector": {
                "crtPEM": (injector / "crt.pem").read_text(),
                "keyPEM": (injector / "key.pem").read_text(),
                "caBundle": (injector / "ca.crt").read_text(),
            },
            # The local kube-apiserver listens on a port of its own, not 443/6443.
            "proxyInit": {"ignoreOutboundPorts": str(self.apiserver_port)},
        }
        return ChartValues.parse(
            chart_values(overrides=[{"installNamespace": True}, certs]),
            namespace=CONTROL_PLANE_NAMESPACE,
            app_version=chart_app_version(),
        )

    async def start(self, client: KubeClient) -> None:
        """Identity, then destination, each in its sandbox behind its proxy; the injector.

        The service accounts must exist (:meth:`register`): the proxies' tokens are theirs.
        """
        py = sys.executable
        kubeconfig = str(self.kubeconfig)
        values = self.values()
        sandbox = await self._start_sandbox(client, values, "identity")
        await self._spawn(
            "identity",
            [
                "ip", "netns", "exec", sandbox.netns,
                py, "-m", "gossamer_identity",
                "--trust-anchors-path", str(self.trust_anchors),
                "--issuer", str(self.state_dir / "identity" / "issuer"),
                "--addr", f"0.0.0.0:{IDENTITY_PORT}",
                "--admin-addr", f"0.0.0.0:{ADMIN_PORTS['identity']}",
                "--controller-namespace", CONTROL_PLANE_NAMESPACE,
                "--identity-trust-domain", TRUST_DOMAIN,
                "--kubeconfig", kubeconfig,
            ],
        )  # fmt: skip
        sandbox = await self._start_sandbox(client, values, "destination")
        await self._spawn(
            "destination",
            [
                "ip", "netns", "exec", sandbox.netns,
                py, "-m", "gossamer_destination",
                "--addr", f"0.0.0.0:{DESTINATION_PORT}",
                "--policy-addr", f"0.0.0.0:{POLICY_PORT}",
                "--admin-addr", f"0.0.0.0:{ADMIN_PORTS['destination']}",
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
                # Every local proxy may be tapped by the viz tap identity (`gossamer viz tap`).
                "--tap-svc-name", tap_identity(CONTROL_PLANE_NAMESPACE, TRUST_DOMAIN),
            ],
        )  # fmt: skip
        self._token_task = asyncio.create_task(self._renew_tokens(client))

    async def _start_sandbox(
        self, client: KubeClient, values: ChartValues, component: str
    ) -> Sandbox:
        """The component's pod up to its proxy's startup probe, as a kubelet runs it:
        the network namespace, ``linkerd-init`` to completion, then ``linkerd-proxy``."""
        layout = self.layout
        ip = layout.control_plane_address(component)
        key = f"control-plane/{component}"
        sandbox = Sandbox(
            component=component,
            netns=layout.pod_netns(key),
            veth=layout.pod_veth(key),
            ip=ip,
            pod=sandbox_pod(
                values, component, ip=ip, node_name=layout.node_name, uid=str(uuid.uuid4())
            ),
            directory=self.state_dir / "sandboxes" / component,
        )
        self.sandboxes.append(sandbox)
        hosts = render_hosts(
            pod_name=sandbox.pod["metadata"]["name"],
            pod_ip=ip,
            services=(),
            fixed=service_hosts(layout),
        )
        await create_netns(
            layout,
            netns=sandbox.netns,
            veth=sandbox.veth,
            ip=ip,
            hosts_text=hosts,
            namespace=CONTROL_PLANE_NAMESPACE,
        )
        local_images = images.builtin_images(self.runtime_venv)
        init = sandbox.container("linkerd-init")
        lock = sandbox.directory / "xtables-lock"
        lock.mkdir(parents=True, exist_ok=True)
        code = await self._run_container(sandbox, init, local_images, {"/run": lock})
        if code != 0:
            tail = (sandbox.directory / "linkerd-init.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"{component}'s linkerd-init exited {code}:\n{tail}")
        proxy = sandbox.container("linkerd-proxy")
        end_entity = sandbox.directory / "end-entity"
        tokens = sandbox.directory / "tokens"
        for directory in (end_entity, tokens):
            directory.mkdir(parents=True, exist_ok=True)
        identity = launch.identity_for(dict(proxy), {})
        os.chown(end_entity, identity.uid, identity.gid)
        os.chmod(end_entity, 0o700)
        await self._write_token(client, sandbox)
        mounts = {
            "/var/run/linkerd/identity/end-entity": end_entity,
            "/var/run/secrets/tokens": tokens,
        }
        argv = self._container_argv(sandbox, proxy, local_images, mounts)
        env = self._container_env(sandbox, proxy, local_images)
        await self._spawn(f"{component}-proxy", argv, env, inherit_env=False)
        startup = probes.parse_probe(proxy["startupProbe"], proxy.get("ports") or [])
        await self._wait_started(sandbox, startup)
        return sandbox

    def _container_argv(
        self,
        sandbox: Sandbox,
        container: Mapping[str, Any],
        local_images: Mapping[str, images.LocalImage],
        mounts: Mapping[str, Path],
    ) -> list[str]:
        image = local_images[images.image_repository(container["image"])]
        argv = images.container_argv(image, container.get("command"), container.get("args"))
        return launch.launch_argv(
            netns=sandbox.netns,
            identity=launch.identity_for(dict(container), {}),
            argv=argv,
            mounts=[launch.Mount(str(source), target) for target, source in mounts.items()],
        )

    def _container_env(
        self,
        sandbox: Sandbox,
        container: Mapping[str, Any],
        local_images: Mapping[str, images.LocalImage],
    ) -> dict[str, str]:
        image = local_images[images.image_repository(container["image"])]
        env = {"PATH": images.SYSTEM_PATH, "HOSTNAME": sandbox.pod["metadata"]["name"]}
        return {**env, **image.env, **resolve_env(container, sandbox.pod)}

    async def _run_container(
        self,
        sandbox: Sandbox,
        container: Mapping[str, Any],
        local_images: Mapping[str, images.LocalImage],
        mounts: Mapping[str, Path],
        limit: float = 60.0,
    ) -> int:
        """Run an init container to completion; its exit code (-1: killed at ``limit``)."""
        log = sandbox.directory / f"{container['name']}.log"
        with log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *self._container_argv(sandbox, container, local_images, mounts),
                stdout=out,
                stderr=out,
                env=self._container_env(sandbox, container, local_images),
                start_new_session=True,
            )
        try:
            return await asyncio.wait_for(proc.wait(), limit)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            return -1

    async def _wait_started(
        self, sandbox: Sandbox, startup: probes.ProbeSpec, limit: float = 60.0
    ) -> None:
        """The proxy's startup probe passes (``/live`` for identity's, ``/ready`` else)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        result = probes.ProbeResult(False, "not probed yet")
        proxy = next(p for p in self.processes if p.name == f"{sandbox.component}-proxy")
        while loop.time() < deadline:
            result = await probes.check(startup, sandbox.ip, _no_exec)
            if result.ok:
                return
            if proxy.proc.returncode is not None:
                tail = proxy.log.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{sandbox.component}'s proxy exited:\n{tail}")
            await asyncio.sleep(0.2)
        raise TimeoutError(
            f"{sandbox.component}'s proxy failed its startup probe "
            f"{probes.target(startup, sandbox.ip)} for {limit:g}s: {result.reason}"
        )

    async def _write_token(self, client: KubeClient, sandbox: Sandbox) -> None:
        """The proxy's identity token (audience ``identity.l5d.io``), where its projected
        volume would put it."""
        token = await client.token_request(
            CONTROL_PLANE_NAMESPACE,
            sandbox.pod["spec"]["serviceAccountName"],
            audiences=["identity.l5d.io"],
            expiration_seconds=TOKEN_LIFETIME,
        )
        path = sandbox.directory / "tokens" / "linkerd-identity-token"
        temporary = path.with_suffix(".new")
        temporary.write_text(token)
        os.chmod(temporary, 0o644)
        temporary.replace(path)

    async def _renew_tokens(self, client: KubeClient) -> None:
        while True:
            await asyncio.sleep(0.8 * TOKEN_LIFETIME)
            for sandbox in self.sandboxes:
                try:
                    await self._write_token(client, sandbox)
                except (KubeApiError, OSError) as exc:
                    structlog.get_logger("gossamer.dev").warning(
                        "renewing a control-plane proxy's token failed",
                        component=sandbox.component,
                        error=str(exc),
                    )

    async def _spawn(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        inherit_env: bool = True,
    ) -> None:
        """Start and supervise a process; a container's (``inherit_env=False``) gets
        exactly ``env``, as a container's environment is its own."""
        log = self.state_dir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, **(env or {})} if inherit_env else dict(env or {})
        proc = await self._exec(name, tuple(argv), full_env, log)
        process = Process(name, tuple(argv), full_env, proc, log)
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
                env=dict(env),
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
        pending = {name: self.admin_address(name) for name in ADMIN_PORTS}
        for sandbox in self.sandboxes:
            pending[f"{sandbox.component}-proxy"] = f"{sandbox.ip}:{PROXY_ADMIN_PORT}"
        while pending:
            for p in self.processes:
                if p.proc.returncode is not None:
                    tail = p.log.read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"{p.name} exited ({p.proc.returncode}):\n{tail}")
            for name, address in list(pending.items()):
                if await probe_ready(address, limit=2.0) is None:
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
        values = self.values()
        local = {LOCAL_MODE_ANNOTATION: "true"}
        for process in ADMIN_PORTS:
            local[admin_address_annotation(COMPONENT_OF[process])] = self.admin_address(process)
        # `gossamer diagnostics` dials these in place of Linkerd's port-forward.
        grpc_address = local_grpc_address_annotation
        destination = self.layout.control_plane_address("destination")
        local[grpc_address("destination")] = f"{destination}:{DESTINATION_PORT}"
        local[grpc_address("policy")] = f"{destination}:{POLICY_PORT}"
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
        if self._token_task is not None:
            self._token_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._token_task
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
        for sandbox in self.sandboxes:
            proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "delete", sandbox.netns,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await proc.wait()
            shutil.rmtree(NETNS_ETC / sandbox.netns, ignore_errors=True)
        self.sandboxes.clear()


async def _no_exec(command: Sequence[str], limit: float) -> int:
    raise OSError("the control-plane proxies have no exec probes")


def _write_secret(directory: Path, certificate: Any, key: Any) -> None:
    """``crt.pem`` and ``key.pem``, as Linkerd's identity Secret mounts them (key 0600)."""
    (directory / "crt.pem").write_bytes(certificates_to_pem([certificate]))
    key_path = directory / "key.pem"
    key_path.write_bytes(private_key_to_pem(key))
    os.chmod(key_path, 0o600)
