"""The destination service's view of the cluster: one informer per kind, plus the indexes.

Every informer change is turned into *dependency keys* (``("svc", ns, name)``, ``("ip", ip)``,
...). Topics (:mod:`gossamer_destination.topics`) register the keys their answer depends on,
and a change marks exactly those topics dirty. Dirty topics are refreshed once per event-loop
turn, so a burst of watch events (a Deployment rollout) costs one recomputation per topic.

At debug level each refresh logs ``destination.flush`` with ``time.perf_counter()`` stamps
(the system-wide monotonic clock, comparable across processes on one host): when the first
change of the burst arrived (``marked_at``), when the refresh started and finished (every
stream's update queued), and when the connections' writes had been handed to the sockets
(``written_at``, the next event-loop turn), and the garbage collections in between (by
generation). The fan-out benchmark reads them to say where a change's latency went.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import structlog
from gossamer_kube.informer import Informer, ListWatchSource
from gossamer_kube.store import EventKind, KubeObject, StoreEvent

from gossamer_destination.endpoints import (
    SERVICE_NAME_LABEL,
    ZONE_LABEL,
    Endpoint,
    Lookups,
    labels_of,
    meta,
    pod_ips,
)
from gossamer_destination.external_workloads import (
    InvalidExternalWorkloadError,
    is_ready,
    parse_external_workload,
    workload_endpoint,
    workload_endpoints,
)
from gossamer_destination.policy_inbound import PolicyLookups, selecting_server, server_opaque
from gossamer_destination.profiles import Issues
from gossamer_destination.settings import DestinationSettings

log = structlog.get_logger(__name__)

Key = tuple[str, ...]

KINDS = (
    "namespaces",
    "services",
    "endpointslices",
    "pods",
    "nodes",
    "serviceprofiles",
    "servers",
    "serverauthorizations",
    "httplocalratelimitpolicies",
    "authorizationpolicies",
    "meshtlsauthentications",
    "networkauthentications",
    "httproutes",
    "gatewayhttproutes",
    "grpcroutes",
    "tcproutes",
    "tlsroutes",
    "egressnetworks",
    "externalworkloads",
)
#: Kinds whose CRDs may be absent (Gateway API, ExternalWorkload): their informers sync
#: empty meanwhile.
OPTIONAL_KINDS = frozenset(
    {"gatewayhttproutes", "grpcroutes", "tcproutes", "tlsroutes", "externalworkloads"}
)
ROUTE_KINDS = ("httproutes", "gatewayhttproutes", "grpcroutes", "tcproutes", "tlsroutes")
POLICY_KINDS = frozenset(
    {
        "gatewayhttproutes",
        "grpcroutes",
        "tcproutes",
        "tlsroutes",
        "serverauthorizations",
        "httplocalratelimitpolicies",
        "authorizationpolicies",
        "meshtlsauthentications",
        "networkauthentications",
        "httproutes",
        "egressnetworks",
    }
)
ALL: Key = ("all",)
POLICY: Key = ("policy",)


class Dependent(Protocol):
    """Something recomputed when a key it depends on changes."""

    def refresh(self) -> None: ...


def _cluster_ips(svc: KubeObject) -> list[str]:
    spec = svc.get("spec") or {}
    ips = [ip for ip in spec.get("clusterIPs") or () if ip and ip != "None"]
    if not ips and spec.get("clusterIP") not in (None, "", "None"):
        ips = [spec["clusterIP"]]
    return ips


def _slice_service(es: KubeObject) -> list[str]:
    name = labels_of(es).get(SERVICE_NAME_LABEL)
    return [f"{meta(es).get('namespace')}/{name}"] if name else []


def _running_pod_ips(pod: KubeObject) -> list[str]:
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork"):
        return []
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return []
    return pod_ips(pod)


def _workload_ips(workload: KubeObject) -> list[str]:
    """The workload's IPs in normal form (as lookups spell them); invalid ones are skipped."""
    spec = workload.get("spec")
    entries = spec.get("workloadIPs") if isinstance(spec, Mapping) else None
    ips = []
    for entry in entries or ():
        if isinstance(entry, Mapping) and entry.get("ip"):
            try:
                ips.append(str(ipaddress.ip_address(str(entry["ip"]))))
            except ValueError:
                continue
    return ips


def _host_ports(pod: KubeObject) -> list[str]:
    host_ip = (pod.get("status") or {}).get("hostIP")
    if not host_ip:
        return []
    out = []
    for container in (pod.get("spec") or {}).get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("hostPort"):
                out.append(f"{host_ip}:{port['hostPort']}")
    return out


INDEXERS: Mapping[str, Mapping[str, Callable[[KubeObject], Iterable[str]]]] = {
    "services": {"cluster_ip": _cluster_ips},
    "endpointslices": {"service": _slice_service},
    "pods": {"ip": _running_pod_ips, "host_port": _host_ports},
    "externalworkloads": {"ip": _workload_ips},
}


class Cluster:
    """Informers for every kind the destination service reads, and the change fan-out."""

    def __init__(
        self,
        sources: Mapping[str, ListWatchSource],
        settings: DestinationSettings | None = None,
    ) -> None:
        #: For translating ExternalWorkloads (hints, transport port) as discovery does.
        self.settings = settings if settings is not None else DestinationSettings()
        missing = set(KINDS) - set(sources)
        if missing:
            raise ValueError(f"no source for {sorted(missing)}")
        self.informers = {
            kind: Informer(sources[kind], indexers=INDEXERS.get(kind)) for kind in KINDS
        }
        for kind, informer in self.informers.items():
            informer.add_handler(self._handler(kind))
        self._deps: dict[Key, set[Dependent]] = {}
        self._dirty: dict[Dependent, None] = {}
        self._flush_scheduled = False
        self._marked_at = 0.0
        self._marked_gcs: tuple[int, ...] = ()
        self.on_invalid: Callable[[str, str], None] = lambda kind, msg: None
        self._generations: dict[str, int] = {}
        self._global_generation = 0
        self._reported: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for informer in self.informers.values():
            informer.start()

    async def wait_synced(self) -> None:
        await asyncio.gather(*(i.synced.wait() for i in self.informers.values()))

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers.values())

    async def stop(self) -> None:
        await asyncio.gather(*(i.stop() for i in self.informers.values()))

    # -- reads ---------------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> KubeObject | None:
        return self.informers[kind].store.get(namespace, name)

    def objects(self, kind: str, namespace: str | None = None) -> list[KubeObject]:
        return self.informers[kind].store.objects(namespace)

    def by_index(self, kind: str, index: str, value: str) -> list[KubeObject]:
        return self.informers[kind].store.by_index(index, value)

    def service_slices(self, namespace: str, name: str) -> list[KubeObject]:
        return self.by_index("endpointslices", "service", f"{namespace}/{name}")

    def node_zone(self, node: str) -> str:
        obj = self.get("nodes", "", node)
        return str(labels_of(obj).get(ZONE_LABEL, "")) if obj else ""

    def server_opaque(self, pod: KubeObject, port: int) -> bool:
        ns = str(meta(pod).get("namespace"))
        return server_opaque(selecting_server(pod, port, self.objects("servers", ns), Issues()))

    def generation(self, namespace: str) -> tuple[int, int]:
        """Changes whenever pods or Servers of ``namespace``, or any Node, change; endpoint
        translations cached under an older generation are stale."""
        return (self._generations.get(namespace, 0), self._global_generation)

    def lookups(self) -> Lookups:
        return Lookups(
            pod=lambda ns, name: self.get("pods", ns, name),
            node_zone=self.node_zone,
            server_opaque=self.server_opaque,
            external_workload=self.external_workload_endpoint,
        )

    def external_workload_endpoint(
        self, namespace: str, name: str, ip: str, port: int
    ) -> Endpoint | None:
        obj = self.get("externalworkloads", namespace, name)
        if obj is None or not is_ready(obj):
            return None
        try:
            workload = parse_external_workload(obj)
        except InvalidExternalWorkloadError as exc:
            self.report_external_workload(exc)
            return None
        return workload_endpoint(workload, ip, port, self.settings)

    def external_workload_at(self, ip: str, port: int) -> tuple[Endpoint, str] | None:
        """The endpoint and namespace of the valid ExternalWorkload with address ``ip``
        (GetProfile by IP; like a pod's, whether or not it is Ready)."""
        for obj in self.by_index("externalworkloads", "ip", ip):
            try:
                workload = parse_external_workload(obj)
            except InvalidExternalWorkloadError as exc:
                self.report_external_workload(exc)
                continue
            return workload_endpoint(workload, ip, port, self.settings), workload.namespace
        return None

    def service_external_workloads(
        self, service: KubeObject, port: int
    ) -> dict[tuple[str, int], Endpoint]:
        """Endpoints of the ready ExternalWorkloads ``service`` selects (see
        :mod:`.external_workloads`); invalid ones are reported and left out."""
        namespace = str(meta(service).get("namespace") or "")
        return workload_endpoints(
            service,
            port,
            self.objects("externalworkloads", namespace),
            self.settings,
            on_invalid=self.report_external_workload,
        )

    def report_external_workload(self, error: Exception) -> None:
        issues = Issues()
        issues.add(str(error))
        self.report("externalworkloads", issues)

    def policy_lookups(self) -> PolicyLookups:
        return PolicyLookups(
            namespace=lambda name: self.get("namespaces", "", name),
            servers=lambda ns: self.objects("servers", ns),
            authorization_policies=lambda ns: self.objects("authorizationpolicies", ns),
            meshtls_authentication=lambda ns, n: self.get("meshtlsauthentications", ns, n),
            network_authentication=lambda ns, n: self.get("networkauthentications", ns, n),
            http_routes=lambda ns: [
                *self.objects("httproutes", ns),
                *self.objects("gatewayhttproutes", ns),
            ],
            grpc_routes=lambda ns: self.objects("grpcroutes", ns),
            tcp_routes=lambda ns: self.objects("tcproutes", ns),
            tls_routes=lambda ns: self.objects("tlsroutes", ns),
            server_authorizations=lambda ns: self.objects("serverauthorizations", ns),
            rate_limit_policies=lambda ns: self.objects("httplocalratelimitpolicies", ns),
        )

    def report(self, kind: str, issues: Issues) -> None:
        """Log and count each distinct translation problem once."""
        for message in issues.messages:
            if message in self._reported:
                continue
            if len(self._reported) > 10000:
                self._reported.clear()
            self._reported.add(message)
            log.warning("destination.invalid_resource", kind=kind, problem=message)
            self.on_invalid(kind, message)

    # -- dependency tracking -------------------------------------------------------------------

    def depend(self, dependent: Dependent, keys: Iterable[Key]) -> None:
        for key in keys:
            self._deps.setdefault(key, set()).add(dependent)

    def forget(self, dependent: Dependent, keys: Iterable[Key]) -> None:
        for key in keys:
            deps = self._deps.get(key)
            if deps is not None:
                deps.discard(dependent)
                if not deps:
                    del self._deps[key]
        self._dirty.pop(dependent, None)

    def mark(self, keys: Iterable[Key]) -> None:
        for key in keys:
            for dependent in self._deps.get(key, ()):
                self._dirty[dependent] = None
        if self._dirty and not self._flush_scheduled:
            self._flush_scheduled = True
            self._marked_at = time.perf_counter()
            self._marked_gcs = _collections()
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Refresh every dirty dependent once (runs soon after a burst of changes)."""
        started = time.perf_counter()
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, {}
        for dependent in dirty:
            try:
                dependent.refresh()
            except Exception:
                log.exception("destination.refresh_failed", topic=repr(dependent))
        # Writes the refresh queued run in the next turn, before this (callbacks run in order).
        asyncio.get_running_loop().call_soon(
            self._log_flush,
            len(dirty),
            self._marked_at,
            started,
            time.perf_counter(),
            self._marked_gcs,
        )

    @staticmethod
    def _log_flush(
        refreshed: int, marked_at: float, started: float, finished: float, gcs: tuple[int, ...]
    ) -> None:
        written = time.perf_counter()
        log.debug(
            "destination.flush",
            refreshed=refreshed,
            marked_at=marked_at,
            started_at=started,
            finished_at=finished,
            written_at=written,
            # Garbage collections since the change came, by generation (a pause shows here).
            collections=[now - then for now, then in zip(_collections(), gcs, strict=False)],
        )

    def _handler(self, kind: str) -> Callable[[list[StoreEvent]], None]:
        def handle(events: list[StoreEvent]) -> None:
            keys: set[Key] = set()
            if kind == "nodes":
                self._global_generation += 1
            elif kind in ("pods", "servers", "externalworkloads"):
                for event in events:
                    ns = _ns_name(event.obj)[0]
                    self._generations[ns] = self._generations.get(ns, 0) + 1
            for event in events:
                for obj in (event.old, event.new):
                    if obj is not None:
                        keys.update(_keys(kind, obj))
                if event.kind is EventKind.DELETED and kind == "services":
                    keys.add(("svc", *map(str, _ns_name(event.obj))))
            self.mark(keys)

        return handle


def _collections() -> tuple[int, ...]:
    """How many garbage collections each generation has run."""
    return tuple(stats["collections"] for stats in gc.get_stats())


def _ns_name(obj: KubeObject) -> tuple[str, str]:
    m = meta(obj)
    return str(m.get("namespace") or ""), str(m.get("name") or "")


def _keys(kind: str, obj: KubeObject) -> Iterable[Key]:
    ns, name = _ns_name(obj)
    if kind == "services":
        yield ("svc", ns, name)
        for ip in _cluster_ips(obj):
            yield ("ip", ip)
    elif kind == "endpointslices":
        svc = labels_of(obj).get(SERVICE_NAME_LABEL)
        if svc:
            yield ("svc", ns, svc)
    elif kind == "pods":
        yield ("ns", ns)
        yield ("pod", ns, name)
        for ip in pod_ips(obj):
            yield ("ip", ip)
        for hp in _host_ports(obj):
            yield ("ip", hp.rsplit(":", 1)[0])
    elif kind == "externalworkloads":
        yield ("ns", ns)
        yield ("ew", ns, name)
        for ip in _workload_ips(obj):
            yield ("ip", ip)
    elif kind == "nodes":
        yield ALL
    elif kind == "serviceprofiles":
        yield ("sp", ns, name)
    elif kind == "servers":
        yield ("ns", ns)
        yield POLICY
    elif kind == "namespaces":
        yield ("nsobj", name)
    elif kind in POLICY_KINDS:
        yield POLICY
