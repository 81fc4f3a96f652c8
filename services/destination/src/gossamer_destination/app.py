"""Wiring: informers over a kube client, the gRPC server and the admin server.

:class:`DestinationApp` is what ``__main__`` runs and what integration tests and the
benchmark start in-process or as a subprocess.
"""

from __future__ import annotations

from typing import Any

import structlog
from gossamer_common.admin import AdminServer
from gossamer_common.metrics import Registry
from gossamer_kube import resources
from gossamer_kube.client import KubeClient
from gossamer_kube.informer import ListWatchSource
from gossamer_kube.sources import ClientSource, OptionalSource

from gossamer_destination.cluster import OPTIONAL_KINDS, Cluster
from gossamer_destination.grpc_server import GrpcServer
from gossamer_destination.metrics import DestinationMetrics
from gossamer_destination.route_status_writer import PatchStatus, RouteStatusWriter
from gossamer_destination.server import DestinationApi
from gossamer_destination.settings import DestinationSettings

log = structlog.get_logger(__name__)

REFS = {
    "namespaces": resources.NAMESPACES,
    "services": resources.SERVICES,
    "endpointslices": resources.ENDPOINTSLICES,
    "pods": resources.PODS,
    "nodes": resources.NODES,
    "serviceprofiles": resources.SERVICEPROFILES,
    "servers": resources.SERVERS,
    "serverauthorizations": resources.SERVERAUTHORIZATIONS,
    "httplocalratelimitpolicies": resources.HTTPLOCALRATELIMITPOLICIES,
    "authorizationpolicies": resources.AUTHORIZATIONPOLICIES,
    "meshtlsauthentications": resources.MESHTLSAUTHENTICATIONS,
    "networkauthentications": resources.NETWORKAUTHENTICATIONS,
    "httproutes": resources.HTTPROUTES,
    "gatewayhttproutes": resources.GATEWAY_HTTPROUTES,
    "grpcroutes": resources.GATEWAY_GRPCROUTES,
    "tcproutes": resources.GATEWAY_TCPROUTES,
    "tlsroutes": resources.GATEWAY_TLSROUTES,
    "egressnetworks": resources.EGRESSNETWORKS,
    "externalworkloads": resources.EXTERNALWORKLOADS,
}


def kube_sources(client: KubeClient, recheck: float = 30.0) -> dict[str, ListWatchSource]:
    """One source per kind; the Gateway API kinds tolerate absent CRDs (checked again every
    ``recheck`` seconds), so the destination serves everything else meanwhile."""
    sources: dict[str, ListWatchSource] = {}
    for kind, ref in REFS.items():
        source: ListWatchSource = ClientSource(client, ref)
        if kind in OPTIONAL_KINDS:
            source = OptionalSource(source, recheck=recheck)
        sources[kind] = source
    return sources


def _split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104


def status_patcher(client: KubeClient) -> PatchStatus:
    """Merge-patches a route's status subresource."""

    async def patch(kind: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        await client.patch(REFS[kind], name, body, namespace, subresource="status")

    return patch


class DestinationApp:
    """Informers + gRPC + admin; :meth:`start` returns once caches are synced and serving.

    With ``patch_status`` (the real service passes one), it also writes route status.
    """

    def __init__(
        self,
        settings: DestinationSettings,
        sources: dict[str, ListWatchSource],
        patch_status: PatchStatus | None = None,
    ):
        self.settings = settings
        self.registry = Registry()
        self.metrics = DestinationMetrics(self.registry)
        self.cluster = Cluster(sources, settings)
        self.metrics.watch_cluster(self.cluster)
        self.status_writer: RouteStatusWriter | None = None
        if patch_status is not None:
            writes = self.metrics.route_status_writes
            self.status_writer = RouteStatusWriter(
                self.cluster,
                settings,
                patch_status,
                on_result=lambda result: writes.labels(result).inc(),
            )
        self.api = DestinationApi(self.cluster, settings, self.metrics)
        self.admin = AdminServer(registry=self.registry, ready=lambda: self._ready)
        self.grpc_server: GrpcServer | None = None
        self.grpc_port = 0
        self.policy_port = 0
        self._ready = False

    async def start(self) -> None:
        host, port = _split_addr(self.settings.admin_addr)
        await self.admin.start(host, port)
        self.cluster.start()
        await self.cluster.wait_synced()
        if self.status_writer is not None:
            self.status_writer.start()
        server = GrpcServer(self.api.methods(), self.api)
        self.grpc_server = server
        self.grpc_port = await server.listen(*_split_addr(self.settings.grpc_addr))
        if self.settings.policy_addr:
            self.policy_port = await server.listen(*_split_addr(self.settings.policy_addr))
        self._ready = True
        log.info("destination.serving", grpc_port=self.grpc_port, admin_port=self.admin.port)

    async def stop(self, grace: float = 5.0) -> None:
        """Stops serving: watch streams end at once with UNAVAILABLE (they never finish on
        their own and proxies re-subscribe elsewhere; unary answers are never in flight
        across an await), so ``grace`` bounds nothing here and is kept for callers."""
        self._ready = False
        if self.grpc_server is not None:
            await self.grpc_server.stop()
        if self.status_writer is not None:
            await self.status_writer.stop()
        await self.cluster.stop()
        await self.admin.close()
