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
:class:`InvalidExternalWorkloadError` whose message names the object and the field.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gossamer_destination.endpoints import (
    DEFAULT_INBOUND_PORT,
    OPAQUE_PORTS_ANNOTATION,
    Addr,
    Endpoint,
    annotations_of,
    labels_of,
    meta,
)
from gossamer_destination.ports import lenient_port_set
from gossamer_destination.settings import DestinationSettings

__all__ = [
    "PROXY_PORT_NAME",
    "ExternalWorkload",
    "InvalidExternalWorkloadError",
    "is_ready",
    "parse_external_workload",
    "workload_endpoint",
    "workload_endpoints",
]

#: The workload port that names its proxy's inbound port (Linkerd's convention).
PROXY_PORT_NAME = "linkerd-proxy"
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SPIFFE_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")
MAX_SPIFFE_ID = 2048


class InvalidExternalWorkloadError(ValueError):
    """An ExternalWorkload the mesh cannot use; the message names the object and field."""


@dataclass(frozen=True, slots=True)
class ExternalWorkload:
    namespace: str
    name: str
    identity: str
    server_name: str
    ips: tuple[str, ...]
    ports: tuple[tuple[str, int], ...]
    """``(name, port)``; the name may be empty."""
    labels: tuple[tuple[str, str], ...]
    owner: tuple[str, str] | None
    opaque_ports_annotation: str | None

    def port_named(self, name: str) -> int | None:
        for port_name, number in self.ports:
            if port_name == name:
                return number
        return None

    @property
    def proxy_port(self) -> int:
        return self.port_named(PROXY_PORT_NAME) or DEFAULT_INBOUND_PORT


def check_spiffe_id(value: str) -> str:
    """A SPIFFE ID (``spiffe://<trust-domain>/<path>``) as the SPIFFE spec defines it."""
    if len(value) > MAX_SPIFFE_ID:
        raise ValueError(f"longer than {MAX_SPIFFE_ID} characters")
    if not value.startswith("spiffe://"):
        raise ValueError("must start with spiffe://")
    parts = urlsplit(value)
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError("must have no query or fragment")
    if parts.username is not None or parts.port is not None or "@" in parts.netloc:
        raise ValueError("must have no user info or port")
    if not parts.netloc or not _TRUST_DOMAIN.match(parts.netloc):
        raise ValueError("trust domain must be lower-case letters, digits, '.', '-' or '_'")
    if parts.path:
        segments = parts.path.split("/")[1:]
        for segment in segments:
            if segment in ("", ".", "..") or not _SPIFFE_PATH_SEGMENT.match(segment):
                raise ValueError(f"path segment {segment!r} is not allowed")
    return value


def check_dns_name(value: str) -> str:
    if not value or len(value) > 253:
        raise ValueError("must be 1 to 253 characters")
    if not all(_DNS_LABEL.match(label) for label in value.split(".")):
        raise ValueError("must be a lower-case DNS-1123 subdomain")
    return value


def _where(obj: Mapping[str, Any]) -> str:
    m = meta(obj)
    return f"ExternalWorkload {m.get('namespace')}/{m.get('name')}"


def parse_external_workload(obj: Mapping[str, Any]) -> ExternalWorkload:
    """Validate and flatten one ExternalWorkload object."""
    where = _where(obj)
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise InvalidExternalWorkloadError(f"{where}: spec is missing")
    mesh_tls = spec.get("meshTLS")
    if not isinstance(mesh_tls, Mapping):
        raise InvalidExternalWorkloadError(f"{where}: spec.meshTLS is missing")
    identity, server_name = mesh_tls.get("identity"), mesh_tls.get("serverName")
    try:
        if not isinstance(identity, str):
            raise ValueError("is missing")
        check_spiffe_id(identity)
    except ValueError as exc:
        raise InvalidExternalWorkloadError(
            f"{where}: spec.meshTLS.identity {identity!r} {exc}"
        ) from None
    try:
        if not isinstance(server_name, str):
            raise ValueError("is missing")
        check_dns_name(server_name)
    except ValueError as exc:
        raise InvalidExternalWorkloadError(
            f"{where}: spec.meshTLS.serverName {server_name!r} {exc}"
        ) from None
    ips: list[str] = []
    families: set[int] = set()
    for i, entry in enumerate(spec.get("workloadIPs") or ()):
        raw = entry.get("ip") if isinstance(entry, Mapping) else None
        try:
            ip = ipaddress.ip_address(str(raw))
        except ValueError:
            raise InvalidExternalWorkloadError(
                f"{where}: spec.workloadIPs[{i}].ip {raw!r} is not an IP address"
            ) from None
        if ip.version in families:
            raise InvalidExternalWorkloadError(
                f"{where}: spec.workloadIPs has two IPv{ip.version} addresses"
            )
        families.add(ip.version)
        ips.append(str(ip))
    ports: list[tuple[str, int]] = []
    for i, entry in enumerate(spec.get("ports") or ()):
        if not isinstance(entry, Mapping):
            raise InvalidExternalWorkloadError(f"{where}: spec.ports[{i}] is not an object")
        number, name = entry.get("port"), str(entry.get("name") or "")
        protocol = entry.get("protocol", "TCP")
        if not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 65536:
            raise InvalidExternalWorkloadError(
                f"{where}: spec.ports[{i}].port {number!r} is not a port number"
            )
        if protocol != "TCP":
            raise InvalidExternalWorkloadError(
                f"{where}: spec.ports[{i}].protocol {protocol!r} is not TCP"
            )
        if name and any(name == known for known, _ in ports):
            raise InvalidExternalWorkloadError(f"{where}: spec.ports has two ports named {name}")
        ports.append((name, number))
    m = meta(obj)
    return ExternalWorkload(
        namespace=str(m.get("namespace") or ""),
        name=str(m.get("name") or ""),
        identity=identity,
        server_name=server_name,
        ips=tuple(ips),
        ports=tuple(ports),
        labels=tuple(sorted((str(k), str(v)) for k, v in labels_of(obj).items())),
        owner=_owner(m),
        opaque_ports_annotation=annotations_of(obj).get(OPAQUE_PORTS_ANNOTATION),
    )


def _owner(m: Mapping[str, Any]) -> tuple[str, str] | None:
    for ref in m.get("ownerReferences") or ():
        if isinstance(ref, Mapping) and ref.get("controller") and ref.get("kind"):
            return str(ref["kind"]).lower(), str(ref.get("name") or "")
    return None


def is_ready(obj: Mapping[str, Any]) -> bool:
    """Whether the workload's ``Ready`` condition is ``True``."""
    status = obj.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    for condition in conditions or ():
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


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
            return port if target is None else target  # type: ignore[no-any-return]
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
