"""The whole local mesh: Kubernetes, Gossamer's control plane and the node's pods.

``LocalMesh`` expects to run inside the node network namespace (see :mod:`.node`); the
``gossamer dev`` command and the end-to-end tests put it there.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import yaml
from gossamer_kube.client import KubeApiError, KubeClient
from gossamer_kube.config import KubeConfig
from gossamer_kube.resources import (
    CONFIGMAPS,
    CUSTOMRESOURCEDEFINITIONS,
    DEPLOYMENTS,
    NAMESPACES,
    PODS,
    SECRETS,
    SERVICEACCOUNTS,
    SERVICEPROFILES,
    SERVICES,
    ResourceRef,
)
from gossamer_kube.testing.cluster import ClusterOptions, KubeTestCluster

from gossamer_cli.dev import images
from gossamer_cli.dev.controlplane import CONTROL_PLANE_NAMESPACE, ControlPlane, service_hosts
from gossamer_cli.dev.dashboard import LocalDashboard
from gossamer_cli.dev.layout import NodeLayout
from gossamer_cli.dev.pod import RuntimeContext
from gossamer_cli.dev.prometheus import LocalPrometheus, prometheus_binary
from gossamer_cli.dev.runtime import NodeRuntime
from gossamer_cli.dev.stages import local_mode_stages
from gossamer_cli.dev.tap import LocalTapService

log = structlog.get_logger("gossamer.dev")

REPO = Path(__file__).resolve().parents[4]
CRD_DIR = REPO / "charts" / "gossamer-crds" / "templates"

KINDS: dict[str, ResourceRef] = {
    "Namespace": NAMESPACES,
    "ServiceAccount": SERVICEACCOUNTS,
    "Service": SERVICES,
    "Deployment": DEPLOYMENTS,
    "ConfigMap": CONFIGMAPS,
    "Secret": SECRETS,
    "Pod": PODS,
    "ServiceProfile": SERVICEPROFILES,
    "CustomResourceDefinition": CUSTOMRESOURCEDEFINITIONS,
}


@dataclass(frozen=True)
class LocalMeshConfig:
    state_dir: Path
    runtime_venv: Path
    image_maps: tuple[Path, ...] = ()
    layout: NodeLayout = field(default_factory=NodeLayout)


class LocalMesh:
    def __init__(self, config: LocalMeshConfig) -> None:
        self.config = config
        self.layout = config.layout
        self.cluster: KubeTestCluster | None = None
        self.client: KubeClient | None = None
        self.control_plane: ControlPlane | None = None
        self.runtime: NodeRuntime | None = None
        self.prometheus: LocalPrometheus | None = None
        self.dashboard: LocalDashboard | None = None
        self.tap: LocalTapService | None = None

    async def start(self) -> None:
        state = self.config.state_dir
        state.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.cluster = KubeTestCluster(
            state / "kube",
            options=ClusterOptions(
                node_name=self.layout.node_name,
                node_ip=self.layout.node_address,
                pod_cidr=self.layout.bridge_network,
                node_pod_cidr=self.layout.pod_cidr,
                kwok_stages=local_mode_stages(),
                # On the bridge, where the meshed control plane's sandboxes reach it.
                api_address=self.layout.node_address,
            ),
        )
        await asyncio.to_thread(self.cluster.start)
        log.info("kubernetes is up", seconds=round(time.monotonic() - started, 1))
        self.client = KubeClient(KubeConfig.from_kubeconfig(self.cluster.kubeconfig))
        await self.apply_files(sorted(CRD_DIR.glob("*.yaml")))
        await self._wait_crds()
        self.control_plane = ControlPlane(
            state / "control-plane",
            self.cluster.kubeconfig,
            self.layout,
            runtime_venv=self.config.runtime_venv,
            apiserver_port=urllib.parse.urlsplit(self.cluster.server).port or 443,
        )
        self.control_plane.write_pki(dt.datetime.now(dt.UTC))
        await self.control_plane.register(self.client)
        await self.control_plane.start(self.client)
        await self.control_plane.wait_ready()
        log.info("control plane is up", seconds=round(time.monotonic() - started, 1))
        image_map = images.builtin_images(self.config.runtime_venv)
        for path in self.config.image_maps:
            loaded = images.load_image_map(path, path.parent, self.config.runtime_venv)
            image_map.update(images.readable_copies(loaded, state / "images"))
        ctx = RuntimeContext(self.client, self.layout, image_map, state / "node")
        self.runtime = NodeRuntime(ctx, service_hosts(self.layout))
        await self.runtime.start()
        tap = LocalTapService(state / "tap", state, self.cluster.kubeconfig)
        try:
            await tap.start()
        except (OSError, RuntimeError, TimeoutError) as exc:
            # `gossamer viz tap` then taps the proxies itself; say why the service is gone.
            await tap.stop()
            log.warning("viz tap service did not start", error=str(exc), log=str(tap.log_file))
        else:
            self.tap = tap
        if prometheus_binary() is None:
            log.warning("no prometheus binary (Debian's `prometheus`): viz has no metrics")
        else:
            self.prometheus = LocalPrometheus(
                state / "prometheus", self.client, CONTROL_PLANE_NAMESPACE
            )
            await self.prometheus.start()
            dashboard = LocalDashboard(
                state / "web",
                self.cluster.kubeconfig,
                self.prometheus.url,
                tap=(self.tap.url, self.tap.ca_file) if self.tap is not None else None,
            )
            try:
                await dashboard.start()
            except (OSError, RuntimeError, TimeoutError) as exc:
                # The mesh and the viz commands work without the dashboard; say why it is gone.
                await dashboard.stop()
                log.warning(
                    "viz dashboard did not start", error=str(exc), log=str(dashboard.log_file)
                )
            else:
                self.dashboard = dashboard

    @property
    def kube(self) -> KubeClient:
        assert self.client is not None, "the local mesh is not started"
        return self.client

    async def apply_files(self, paths: Iterable[Path]) -> None:
        for path in paths:
            await self.apply(d for d in yaml.safe_load_all(path.read_text()) if d)

    async def apply(self, documents: Iterable[Mapping[str, Any]]) -> None:
        """Create (or replace) each object, in order."""
        for doc in documents:
            ref = KINDS.get(doc["kind"])
            if ref is None:
                raise ValueError(f"local mode cannot apply kind {doc['kind']!r}")
            namespace = doc["metadata"].get("namespace") if ref.namespaced else None
            try:
                await self.kube.create(ref, doc, namespace=namespace)
            except KubeApiError as exc:
                if exc.status != 409:
                    raise
                await self.kube.patch(ref, doc["metadata"]["name"], doc, namespace=namespace)

    async def _wait_crds(self, limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            items, _ = await self.kube.list(CUSTOMRESOURCEDEFINITIONS)
            pending = [
                i["metadata"]["name"]
                for i in items
                if not any(
                    c.get("type") == "Established" and c.get("status") == "True"
                    for c in (i.get("status") or {}).get("conditions") or []
                )
            ]
            if not pending:
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"CRDs not established: {pending}")

    async def stop(self) -> None:
        """Drain the pods, stop the control plane and Kubernetes; leaves nothing behind."""
        if self.dashboard is not None:
            await self.dashboard.stop()
        if self.tap is not None:
            await self.tap.stop()
        if self.prometheus is not None:
            await self.prometheus.stop()
        if self.runtime is not None:
            await self.runtime.stop(grace=10)
        if self.control_plane is not None:
            await self.control_plane.stop()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
        if self.cluster is not None:
            await asyncio.to_thread(self.cluster.stop)
