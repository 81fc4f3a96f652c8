"""Resolving ``Get``/``GetProfile`` requests to topics (the decisions, no gRPC here).

Each function returns a topic for the caller to subscribe to, or raises
:class:`LookupFailed` carrying the gRPC status Linkerd's controller would answer with
(linkerd-wire.md §3.1, §3.2): the proxy treats ``INVALID_ARGUMENT``/``FAILED_PRECONDITION``
as permanent and retries everything else.
"""

from __future__ import annotations

import enum
from typing import Any

from gossamer_api.proxy import destination_pb2

from gossamer_destination.authority import (
    InvalidAuthorityError,
    IpAuthority,
    ServiceAuthority,
    parse_authority,
)
from gossamer_destination.cluster import ALL, Cluster, Key
from gossamer_destination.context import CallerContext
from gossamer_destination.endpoints import (
    Endpoint,
    SliceCache,
    filter_endpoints,
    is_external_name,
    meta,
    pod_endpoint,
    pod_opaque_ports,
    service_endpoints,
    target_port,
)
from gossamer_destination.ports import container_ports
from gossamer_destination.profiles import (
    Issues,
    endpoint_profile,
    profile_name,
    service_profile,
)
from gossamer_destination.settings import DestinationSettings
from gossamer_destination.topics import EndpointTopic, LatestTopic, Topic, TopicRegistry


class Status(enum.Enum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNKNOWN = "UNKNOWN"
    UNIMPLEMENTED = "UNIMPLEMENTED"


class LookupFailedError(Exception):
    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Discovery:
    """Builds (or finds) the topic answering one request."""

    def __init__(
        self, cluster: Cluster, settings: DestinationSettings, registry: TopicRegistry
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.registry = registry

    def _parse(self, path: str) -> ServiceAuthority | IpAuthority:
        try:
            return parse_authority(path, self.settings.cluster_domain)
        except InvalidAuthorityError as exc:
            raise LookupFailedError(Status.INVALID_ARGUMENT, str(exc)) from exc

    # -- Get ---------------------------------------------------------------------------------

    def endpoints_topic(self, path: str, ctx: CallerContext) -> Topic:
        auth = self._parse(path)
        if isinstance(auth, IpAuthority):
            raise LookupFailedError(Status.INVALID_ARGUMENT, "IP queries not supported by Get API")
        ns, name, port, hostname = auth.namespace, auth.name, auth.port, auth.hostname
        service = self.cluster.get("services", ns, name)
        if service is None:
            raise LookupFailedError(Status.NOT_FOUND, f"service {ns}/{name} not found")
        if is_external_name(service):
            raise LookupFailedError(
                Status.INVALID_ARGUMENT, f"service {ns}/{name} is of type ExternalName"
            )
        caller_zone = self.cluster.node_zone(ctx.node) if ctx.node else None
        local = (service.get("spec") or {}).get("internalTrafficPolicy") == "Local"
        node = ctx.node if local else None
        key = ("get", ns, name, port, hostname, node, caller_zone or None)
        cluster, settings = self.cluster, self.settings
        lookups = cluster.lookups()
        cache = SliceCache()

        def compute() -> tuple[dict[tuple[str, int], Endpoint] | None, set[Key]]:
            deps: set[Key] = {("svc", ns, name), ("ns", ns), ALL}
            svc = cluster.get("services", ns, name)
            if svc is None or is_external_name(svc):
                return None, deps
            slices = cluster.service_slices(ns, name)
            foreign: set[tuple[str, str]] = set()
            found = service_endpoints(
                svc,
                port,
                slices,
                lookups,
                settings,
                cache=cache,
                generation=cluster.generation(ns),
                foreign_workloads=foreign,
            )
            deps.update(("ew", ew_ns, ew_name) for ew_ns, ew_name in foreign)
            for addr, workload in cluster.service_external_workloads(svc, port).items():
                found.setdefault(addr, workload)
            return filter_endpoints(found, hostname=hostname, node=node), deps

        return self.registry.get_or_create(
            key,
            lambda: EndpointTopic(
                key,
                cluster,
                self.registry,
                compute,
                {"service": name, "namespace": ns},
                caller_zone or None,
            ),
        )

    # -- GetProfile --------------------------------------------------------------------------

    def profile_topic(self, path: str, ctx: CallerContext) -> Topic:
        auth = self._parse(path)
        if isinstance(auth, ServiceAuthority):
            service = self.cluster.get("services", auth.namespace, auth.name)
            if service is None:
                raise LookupFailedError(
                    Status.UNKNOWN, f"service {auth.namespace}/{auth.name} not found"
                )
            if auth.hostname is not None:
                ip = self._hostname_ip(auth)
                return self._endpoint_profile_topic(ip, auth.port)
            return self._service_profile_topic(auth.namespace, auth.name, auth.port, ctx)
        services = self.cluster.by_index("services", "cluster_ip", auth.ip)
        if len(services) > 1:
            names = sorted(f"{meta(s).get('namespace')}/{meta(s).get('name')}" for s in services)
            raise LookupFailedError(
                Status.FAILED_PRECONDITION, f"several services have IP {auth.ip}: {names}"
            )
        if services:
            m = meta(services[0])
            return self._service_profile_topic(
                str(m.get("namespace")), str(m.get("name")), auth.port, ctx
            )
        pods = self._pods_at(auth.ip, auth.port)
        if len(pods) > 1:
            raise LookupFailedError(
                Status.FAILED_PRECONDITION, f"several running pods have IP {auth.ip}"
            )
        return self._endpoint_profile_topic(auth.ip, auth.port)

    def _hostname_ip(self, auth: ServiceAuthority) -> str:
        for es in self.cluster.service_slices(auth.namespace, auth.name):
            for ep in es.get("endpoints") or ():
                if ep.get("hostname") == auth.hostname and ep.get("addresses"):
                    return str(ep["addresses"][0])
        raise LookupFailedError(
            Status.NOT_FOUND,
            f"no endpoint with hostname {auth.hostname} in {auth.namespace}/{auth.name}",
        )

    def _pods_at(self, ip: str, port: int) -> list[dict[str, Any]]:
        pods = self.cluster.by_index("pods", "ip", ip)
        if not pods:
            pods = self.cluster.by_index("pods", "host_port", f"{ip}:{port}")
        return pods

    def _service_profile_topic(self, ns: str, name: str, port: int, ctx: CallerContext) -> Topic:
        client_ns = ctx.namespace or ns
        key = ("profile", ns, name, port, client_ns)
        cluster, settings = self.cluster, self.settings
        fqn = profile_name(name, ns, settings.cluster_domain)

        def compute() -> tuple[destination_pb2.DestinationProfile | None, set[Key]]:
            deps: set[Key] = {("svc", ns, name), ("sp", ns, fqn), ("sp", client_ns, fqn)}
            svc = cluster.get("services", ns, name)
            if svc is None:
                return None, deps
            if target_port(svc, port) is None:
                return destination_pb2.DestinationProfile(), deps
            sp = cluster.get("serviceprofiles", client_ns, fqn) or cluster.get(
                "serviceprofiles", ns, fqn
            )
            issues = Issues()
            profile = service_profile(svc, port, sp, settings, issues)
            cluster.report("ServiceProfile", issues)
            return profile, deps

        return self.registry.get_or_create(
            key, lambda: LatestTopic(key, cluster, self.registry, compute)
        )

    def _endpoint_profile_topic(self, ip: str, port: int) -> Topic:
        key = ("endpoint-profile", ip, port)
        cluster, settings = self.cluster, self.settings
        lookups = cluster.lookups()

        def compute() -> tuple[destination_pb2.DestinationProfile | None, set[Key]]:
            deps: set[Key] = {("ip", ip), ALL}
            pods = self._pods_at(ip, port)
            workload = cluster.external_workload_at(ip, port) if not pods else None
            if workload is not None:
                endpoint, namespace = workload
                deps.add(("ns", namespace))
                return endpoint_profile(endpoint, namespace, endpoint.hint == "opaque"), deps
            if not pods:
                opaque = settings.default_opaque_ports.contains(port)
                return endpoint_profile(Endpoint(ip, port), None, opaque), deps
            pod = pods[0]
            ns = str(meta(pod).get("namespace"))
            deps.add(("ns", ns))
            if (pod.get("status") or {}).get("phase") != "Running":
                return None, deps
            endpoint = pod_endpoint(pod, ip, port, lookups, settings)
            opaque = pod_opaque_ports(pod, settings).contains(
                port, container_ports(pod)
            ) or cluster.server_opaque(pod, port)
            return endpoint_profile(endpoint, ns, opaque), deps

        return self.registry.get_or_create(
            key, lambda: LatestTopic(key, cluster, self.registry, compute)
        )
