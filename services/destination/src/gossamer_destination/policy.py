"""Resolving inbound (``WatchPort``) and outbound (``Watch``) policy requests to topics."""

from __future__ import annotations

import ipaddress

from gossamer_api.proxy import inbound_pb2, outbound_pb2

from gossamer_destination.authority import InvalidAuthorityError, split_host_port
from gossamer_destination.cluster import POLICY, Cluster, Key
from gossamer_destination.context import InvalidWorkloadError, parse_workload
from gossamer_destination.discovery import LookupFailedError, Status
from gossamer_destination.egress import (
    EgressNetwork,
    InvalidEgressNetworkError,
    egress_policy,
    egress_routes,
    parse_egress_network,
    select_egress_network,
)
from gossamer_destination.endpoints import meta
from gossamer_destination.external_workloads import (
    InvalidExternalWorkloadError,
    parse_external_workload,
)
from gossamer_destination.policy_inbound import (
    external_workload,
    inbound_server,
    workload_inbound_server,
)
from gossamer_destination.policy_outbound import egress_fallback, service_policy
from gossamer_destination.profiles import Issues
from gossamer_destination.settings import DestinationSettings
from gossamer_destination.topics import LatestTopic, Topic, TopicRegistry
from gossamer_destination.wire import ip_from_proto


class Policies:
    def __init__(
        self, cluster: Cluster, settings: DestinationSettings, registry: TopicRegistry
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.registry = registry

    # -- inbound -----------------------------------------------------------------------------

    def inbound_topic(self, spec: inbound_pb2.PortSpec) -> Topic:
        try:
            workload = parse_workload(spec.workload)
        except InvalidWorkloadError as exc:
            raise LookupFailedError(Status.INVALID_ARGUMENT, str(exc)) from exc
        if not 0 < spec.port < 65536:
            raise LookupFailedError(Status.INVALID_ARGUMENT, f"invalid port {spec.port}")
        if workload.pod is None:
            # parse_workload names a pod or an external workload, never neither.
            return self._external_workload_topic(
                workload.namespace, str(workload.external_workload), spec.port
            )
        ns, pod_name, port = workload.namespace, workload.pod, spec.port
        if self.cluster.get("pods", ns, pod_name) is None:
            raise LookupFailedError(Status.NOT_FOUND, f"pod {ns}/{pod_name} not found")
        key = ("inbound", ns, pod_name, port)
        cluster, settings = self.cluster, self.settings

        def compute() -> tuple[inbound_pb2.Server | None, set[Key]]:
            deps: set[Key] = {("pod", ns, pod_name), ("ns", ns), ("nsobj", ns), POLICY}
            pod = cluster.get("pods", ns, pod_name)
            if pod is None:
                return None, deps
            issues = Issues()
            server = inbound_server(pod, port, cluster.policy_lookups(), settings, issues)
            cluster.report("policy", issues)
            return server, deps

        return self.registry.get_or_create(
            key, lambda: LatestTopic(key, cluster, self.registry, compute)
        )

    def _external_workload_topic(self, ns: str, name: str, port: int) -> Topic:
        """Inbound policy for the proxy of the ExternalWorkload ``ns/name``: the Servers whose
        ``externalWorkloadSelector`` selects it, else its default policy."""
        obj = self.cluster.get("externalworkloads", ns, name)
        if obj is None:
            raise LookupFailedError(Status.NOT_FOUND, f"external workload {ns}/{name} not found")
        try:
            parse_external_workload(obj)
        except InvalidExternalWorkloadError as exc:
            raise LookupFailedError(Status.FAILED_PRECONDITION, str(exc)) from exc
        key = ("inbound-ew", ns, name, port)
        cluster, settings = self.cluster, self.settings

        def compute() -> tuple[inbound_pb2.Server | None, set[Key]]:
            deps: set[Key] = {("ew", ns, name), ("ns", ns), ("nsobj", ns), POLICY}
            current = cluster.get("externalworkloads", ns, name)
            if current is None:
                return None, deps
            try:
                parsed = parse_external_workload(current)
            except InvalidExternalWorkloadError as exc:
                cluster.report_external_workload(exc)
                return None, deps
            issues = Issues()
            server = workload_inbound_server(
                external_workload(current, parsed, settings),
                port,
                cluster.policy_lookups(),
                settings,
                issues,
            )
            cluster.report("policy", issues)
            return server, deps

        return self.registry.get_or_create(
            key, lambda: LatestTopic(key, cluster, self.registry, compute)
        )

    # -- outbound ----------------------------------------------------------------------------

    def outbound_topic(self, spec: outbound_pb2.TrafficSpec) -> Topic:
        target = spec.WhichOneof("target")
        if target == "addr":
            ip = ip_from_proto(spec.addr.ip)
            port = spec.addr.port
            services = self.cluster.by_index("services", "cluster_ip", ip)
            if services:
                m = meta(services[0])
                return self._service_topic(str(m.get("namespace")), str(m.get("name")), port)
            return self._egress_topic(ip, port, self._client_namespace(spec.source_workload))
        if target == "authority":
            try:
                host, port = split_host_port(spec.authority)
            except InvalidAuthorityError as exc:
                raise LookupFailedError(Status.NOT_FOUND, str(exc)) from exc
            labels = host.rstrip(".").split(".")
            suffix = ["svc", *self.settings.cluster_domain.split(".")]
            if len(labels) >= 3 and labels[2] == "svc" and labels[2:] in (["svc"], suffix):
                return self._service_topic(labels[1], labels[0], port)
            raise LookupFailedError(Status.NOT_FOUND, f"{host} is not a cluster service")
        raise LookupFailedError(Status.INVALID_ARGUMENT, "TrafficSpec has no target")

    def _service_topic(self, ns: str, name: str, port: int) -> Topic:
        if self.cluster.get("services", ns, name) is None:
            raise LookupFailedError(Status.NOT_FOUND, f"service {ns}/{name} not found")
        key = ("outbound", ns, name, port)
        cluster, settings = self.cluster, self.settings

        def compute() -> tuple[outbound_pb2.OutboundPolicy | None, set[Key]]:
            deps: set[Key] = {("svc", ns, name), POLICY}

            def exists(namespace: str, svc: str) -> bool:
                # A route's backend Service: its creation or deletion changes the policy.
                deps.add(("svc", namespace, svc))
                return cluster.get("services", namespace, svc) is not None

            svc = cluster.get("services", ns, name)
            if svc is None:
                return None, deps
            issues = Issues()
            policy = service_policy(svc, port, cluster.policy_lookups(), exists, settings, issues)
            cluster.report("policy", issues)
            return policy, deps

        return self.registry.get_or_create(
            key, lambda: LatestTopic(key, cluster, self.registry, compute)
        )

    @staticmethod
    def _client_namespace(source_workload: str) -> str | None:
        """The client's namespace scopes EgressNetworks; an unknown client gets the global
        ones only."""
        try:
            return parse_workload(source_workload).namespace if source_workload else None
        except InvalidWorkloadError:
            return None

    @property
    def global_egress_namespace(self) -> str:
        return self.settings.egress_network_namespace or self.settings.controller_namespace

    def _egress_networks(self, client_ns: str | None, issues: Issues) -> list[EgressNetwork]:
        namespaces = {self.global_egress_namespace}
        if client_ns:
            namespaces.add(client_ns)
        parsed = []
        for ns in sorted(namespaces):
            for obj in self.cluster.objects("egressnetworks", ns):
                try:
                    parsed.append(parse_egress_network(obj, self.settings.cluster_networks))
                except InvalidEgressNetworkError as exc:
                    issues.add(f"{exc}; not enforced")
        return parsed

    def _egress_topic(self, ip: str, port: int, client_ns: str | None) -> Topic:
        """An address that is no Service: the EgressNetwork that holds it, else (outside the
        cluster networks) ``egress-fallback``, else ``NOT_FOUND``; recomputed on any policy
        change, so a new EgressNetwork applies to open streams."""
        addr = ipaddress.ip_address(ip)
        in_cluster = any(addr in net for net in self.settings.cluster_networks)
        cluster, settings = self.cluster, self.settings
        if in_cluster:
            known = self._egress_networks(client_ns, Issues())
            if select_egress_network(known, addr, client_ns, self.global_egress_namespace) is None:
                raise LookupFailedError(Status.NOT_FOUND, f"no service has IP {ip}")
        key = ("egress", client_ns or "", ip, port)

        def exists(namespace: str, svc: str) -> bool:
            return cluster.get("services", namespace, svc) is not None

        def compute() -> tuple[outbound_pb2.OutboundPolicy | None, set[Key]]:
            deps: set[Key] = {POLICY}
            issues = Issues()
            known = self._egress_networks(client_ns, issues)
            egress = select_egress_network(known, addr, client_ns, self.global_egress_namespace)
            if egress is None:
                cluster.report("policy", issues)
                return (None if in_cluster else egress_fallback(ip, port)), deps
            lookups = cluster.policy_lookups()
            policy = egress_policy(
                egress,
                ip,
                port,
                egress_routes(egress, port, lookups.http_routes, client_ns),
                exists,
                settings,
                issues,
                grpc_routes=egress_routes(egress, port, lookups.grpc_routes, client_ns),
                tcp_routes=egress_routes(egress, port, lookups.tcp_routes, client_ns),
                tls_routes=egress_routes(egress, port, lookups.tls_routes, client_ns),
            )
            cluster.report("policy", issues)
            return policy, deps

        return self.registry.get_or_create(
            key, lambda: LatestTopic(key, cluster, self.registry, compute)
        )
