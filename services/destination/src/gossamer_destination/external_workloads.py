"""ExternalWorkloads (``workload.linkerd.io/v1beta1``) as endpoints of the Services that
select them (pure; linkerd-wire.md §3.1 "ExternalWorkload endpoints").

An ExternalWorkload is a proxy outside Kubernetes (a VM, a host in a plain network
namespace) with a SPIFFE identity. A Service whose ``spec.selector`` matches the workload's
labels gets one endpoint per workload IP, on the port the Service's ``targetPort`` names
(a number as it is, a name looked up in ``spec.ports[].name``), once the workload's
``Ready`` condition is ``True``, as Linkerd's external-workload controller writes them.
Each endpoint carries the workload's URI identity and TLS server name
(``uri_like_identity`` + ``server_name`` in ``TlsIdentity``), the ``h2`` or ``opaque``
hint, and the transport header port: the workload port named ``linkerd-proxy``, else 4143.

The destination serves these endpoints itself from its ExternalWorkload informer rather
than writing EndpointSlices; EndpointSlices that Linkerd's controller wrote (``targetRef``
kind ``ExternalWorkload``) resolve to the same endpoints. An object the apiserver accepted
but the mesh cannot use (an identity that is not a SPIFFE URI, a server name that is not a
DNS name, an IP that does not parse, duplicate port names) is refused with a
:class:`InvalidExternalWorkloadError` whose message names the object and the field
(:mod:`gossamer_kube.external_workload`, shared with ``gossamer check``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from gossamer_kube.external_workload import (
    PROXY_PORT_NAME,
    ExternalWorkload,
    InvalidExternalWorkloadError,
    check_spiffe_id,
    is_ready,
    parse_external_workload,
)

from gossamer_destination.endpoints import Addr, Endpoint, labels_of
from gossamer_destination.ports import lenient_port_set
from gossamer_destination.settings import DestinationSettings

__all__ = [
    "PROXY_PORT_NAME",
    "ExternalWorkload",
    "InvalidExternalWorkloadError",
    "check_spiffe_id",
    "is_ready",
    "parse_external_workload",
    "workload_endpoint",
    "workload_endpoints",
]


def workload_endpoint(
    workload: ExternalWorkload, ip: str, port: int, settings: DestinationSettings
) -> Endpoint:
    """The endpoint for one workload address: URI identity, server name, hint, labels."""
    opaque = lenient_port_set(
        workload.opaque_ports_annotation, settings.default_opaque_ports
    ).contains(port, {name: number for name, number in workload.ports if name})
    hint = "opaque" if opaque else ("h2" if settings.enable_h2_upgrade else None)
    transport_port = None
    if (opaque or settings.transport_header) and port != workload.proxy_port:
        transport_port = workload.proxy_port
    labels = [("external_workload", workload.name)]
    if workload.owner is not None:
        labels.append(workload.owner)
    labels.append(("zone", ""))
    return Endpoint(
        ip,
        port,
        tuple(labels),
        identity=workload.identity,
        hint=hint,
        opaque_transport_port=transport_port,
        http2=True,
        uri_identity=True,
        server_name=workload.server_name,
    )


def resolve_target_port(service: Mapping[str, Any], port: int) -> int | str | None:
    """The Service port's ``targetPort`` (number or name); ``None`` if no such port."""
    for service_port in (service.get("spec") or {}).get("ports") or ():
        if service_port.get("port") == port:
            target = service_port.get("targetPort")
            if target is None:
                return port
            return target if isinstance(target, int | str) else None
    return None


def workload_endpoints(
    service: Mapping[str, Any],
    port: int,
    objects: Iterable[Mapping[str, Any]],
    settings: DestinationSettings,
    *,
    on_invalid: Any = None,
) -> dict[Addr, Endpoint]:
    """The endpoints of ``service`` on ``port`` from the ready ExternalWorkloads it selects.

    ``objects`` are the ExternalWorkloads of the Service's namespace; a Service without a
    selector selects none. Invalid objects are skipped and passed to ``on_invalid`` (the
    error) so the caller can report them.
    """
    selector = (service.get("spec") or {}).get("selector")
    if not selector:
        return {}
    target = resolve_target_port(service, port)
    if target is None:
        return {}
    allowed = {4, 6} if settings.enable_ipv6 else {4}
    found: dict[Addr, Endpoint] = {}
    for obj in objects:
        labels = labels_of(obj)
        if any(labels.get(key) != value for key, value in selector.items()):
            continue
        try:
            workload = parse_external_workload(obj)
        except InvalidExternalWorkloadError as exc:
            if on_invalid is not None:
                on_invalid(exc)
            continue
        if not is_ready(obj):
            continue
        number = target if isinstance(target, int) else workload.port_named(str(target))
        if number is None:
            continue
        ips = [ip for ip in workload.ips if ipaddress.ip_address(ip).version in allowed]
        if len(ips) > 1:  # dual-stack: like pods, prefer the IPv6 address
            ips = [ip for ip in ips if ipaddress.ip_address(ip).version == 6]
        for ip in ips:
            found[(ip, number)] = workload_endpoint(workload, ip, number, settings)
    return found
