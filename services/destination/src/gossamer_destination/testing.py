"""Test doubles shipped beside the code: Kubernetes object builders and an in-memory source.

:class:`MemorySource` implements the informer's list/watch contract over a dict, so the whole
service (informers, topics, gRPC) can run in unit tests without an apiserver. Integration
tests use the real apiserver instead.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import AsyncIterator
from typing import Any

from gossamer_kube.store import KubeObject, object_key

from gossamer_destination.cluster import KINDS

GATEWAY = "gateway.networking.k8s.io/"

_rv = itertools.count(1)


class MemorySource:
    """One kind's objects; :meth:`apply`/:meth:`remove` emit watch events to open watches."""

    def __init__(self, name: str, objects: list[KubeObject] | None = None) -> None:
        self.name = name
        self.objects: dict[tuple[str, str], KubeObject] = {}
        self._watchers: list[asyncio.Queue[tuple[str, KubeObject]]] = []
        for obj in objects or ():
            self._store(obj)

    def _store(self, obj: KubeObject) -> KubeObject:
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(next(_rv))
        self.objects[object_key(obj)] = obj
        return obj

    async def list(self) -> tuple[list[KubeObject], str]:
        return [copy.deepcopy(o) for o in self.objects.values()], str(next(_rv))

    async def watch(self, resource_version: str) -> AsyncIterator[tuple[str, KubeObject]]:
        queue: asyncio.Queue[tuple[str, KubeObject]] = asyncio.Queue()
        self._watchers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._watchers.remove(queue)

    def apply(self, obj: KubeObject) -> None:
        kind = "MODIFIED" if object_key(obj) in self.objects else "ADDED"
        stored = self._store(obj)
        for q in self._watchers:
            q.put_nowait((kind, copy.deepcopy(stored)))

    def remove(self, namespace: str, name: str) -> None:
        obj = self.objects.pop((namespace, name))
        for q in self._watchers:
            q.put_nowait(("DELETED", copy.deepcopy(obj)))


def memory_sources(*objects: KubeObject) -> dict[str, MemorySource]:
    """Sources for every kind, pre-filled with ``objects`` (routed by their ``kind``)."""
    by_kind = {
        "Namespace": "namespaces",
        "Service": "services",
        "EndpointSlice": "endpointslices",
        "Pod": "pods",
        "Node": "nodes",
        "ServiceProfile": "serviceprofiles",
        "Server": "servers",
        "ServerAuthorization": "serverauthorizations",
        "HTTPLocalRateLimitPolicy": "httplocalratelimitpolicies",
        "AuthorizationPolicy": "authorizationpolicies",
        "MeshTLSAuthentication": "meshtlsauthentications",
        "NetworkAuthentication": "networkauthentications",
        "HTTPRoute": "httproutes",
        "GRPCRoute": "grpcroutes",
        "TCPRoute": "tcproutes",
        "TLSRoute": "tlsroutes",
        "EgressNetwork": "egressnetworks",
        "ExternalWorkload": "externalworkloads",
    }
    sources = {kind: MemorySource(kind) for kind in KINDS}
    for obj in objects:
        kind = by_kind[obj["kind"]]
        if obj["kind"] == "HTTPRoute" and str(obj.get("apiVersion", "")).startswith(GATEWAY):
            kind = "gatewayhttproutes"
        sources[kind].apply(obj)
    return sources


# -- object builders ---------------------------------------------------------------------------


def service(
    name: str,
    namespace: str = "ns",
    *,
    ports: list[dict[str, Any]] | None = None,
    cluster_ip: str = "10.96.0.10",
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> KubeObject:
    body: dict[str, Any] = {
        "clusterIP": cluster_ip,
        "ports": ports if ports is not None else [{"name": "http", "port": 80, "targetPort": 8080}],
    }
    body.update(spec)
    return {
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": body,
    }


def pod(
    name: str,
    ip: str,
    namespace: str = "ns",
    *,
    meshed: str | None = "gossamer",
    sa: str = "web",
    node: str = "node-1",
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    container_ports: list[dict[str, Any]] | None = None,
    owner: tuple[str, str] | None = ("ReplicaSet", "web-5d8f9"),
    phase: str = "Running",
    probes: dict[str, Any] | None = None,
) -> KubeObject:
    all_labels = {"app": "web", "pod-template-hash": "5d8f9"}
    if meshed:
        all_labels["linkerd.io/control-plane-ns"] = meshed
    all_labels.update(labels or {})
    app: dict[str, Any] = {"name": "app", "ports": container_ports or []}
    app.update(probes or {})
    containers: list[dict[str, Any]] = [app]
    if meshed:
        containers.insert(
            0,
            {
                "name": "linkerd-proxy",
                "env": [{"name": "LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "value": "0.0.0.0:4143"}],
            },
        )
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": all_labels,
        "annotations": annotations or {},
    }
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    return {
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": node, "serviceAccountName": sa, "containers": containers},
        "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "192.168.1.1"},
    }


def endpoint_slice(
    service_name: str,
    endpoints: list[tuple[str, str | None]],
    namespace: str = "ns",
    *,
    name: str | None = None,
    port: int = 8080,
    port_name: str = "http",
    not_ready: tuple[str, ...] = (),
    hostnames: dict[str, str] | None = None,
) -> KubeObject:
    """``endpoints`` = ``[(ip, pod name or None)]``."""
    eps = []
    for ip, pod_name in endpoints:
        ep: dict[str, Any] = {
            "addresses": [ip],
            "conditions": {"ready": ip not in not_ready},
            "nodeName": "node-1",
        }
        if pod_name:
            ep["targetRef"] = {"kind": "Pod", "name": pod_name, "namespace": namespace}
        if hostnames and ip in hostnames:
            ep["hostname"] = hostnames[ip]
        eps.append(ep)
    return {
        "kind": "EndpointSlice",
        "metadata": {
            "name": name or f"{service_name}-abc",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": eps,
    }


def namespace(name: str, annotations: dict[str, str] | None = None) -> KubeObject:
    return {"kind": "Namespace", "metadata": {"name": name, "annotations": annotations or {}}}


def node(name: str, zone: str) -> KubeObject:
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
    }


def egress_network(
    name: str,
    namespace: str = "ns",
    *,
    traffic_policy: str = "Deny",
    networks: list[dict[str, Any]] | None = None,
    created: str = "2026-01-01T00:00:00Z",
) -> KubeObject:
    spec: dict[str, Any] = {"trafficPolicy": traffic_policy}
    if networks is not None:
        spec["networks"] = networks
    return {
        "apiVersion": "policy.linkerd.io/v1alpha1",
        "kind": "EgressNetwork",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
        "spec": spec,
    }
