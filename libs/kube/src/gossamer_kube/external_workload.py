"""The ExternalWorkload resource (``workload.linkerd.io/v1beta1``), validated (pure).

An ExternalWorkload is a proxy outside Kubernetes (a VM, a bare-metal host) in the mesh:
``spec.meshTLS.identity`` (a SPIFFE ID), ``spec.meshTLS.serverName`` (the TLS server name it
answers to), ``spec.workloadIPs[].ip`` and ``spec.ports[]`` ``{name, port, protocol}``, and
a ``Ready`` condition in its status. The CRD's schema catches most mistakes at the
apiserver; :func:`parse_external_workload` checks everything the mesh relies on (a SPIFFE
ID per the SPIFFE spec, a DNS-1123 server name, parseable IPs, one per family, unique port
names, TCP only), so that the destination service (which serves the workload as endpoints)
and ``gossamer check`` (which names invalid ones) refuse the same objects with the same
message, naming the object and the field.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "PROXY_PORT_NAME",
    "ExternalWorkload",
    "InvalidExternalWorkloadError",
    "check_dns_name",
    "check_spiffe_id",
    "is_ready",
    "parse_external_workload",
]

DEFAULT_PROXY_PORT = 4143
OPAQUE_PORTS_ANNOTATION = "config.linkerd.io/opaque-ports"


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, Mapping) else {}


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    labels = meta(obj).get("labels")
    return labels if isinstance(labels, Mapping) else {}


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    annotations = meta(obj).get("annotations")
    return annotations if isinstance(annotations, Mapping) else {}


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
        return self.port_named(PROXY_PORT_NAME) or DEFAULT_PROXY_PORT


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
        labels=tuple(sorted((str(k), str(v)) for k, v in _labels(obj).items())),
        owner=_owner(m),
        opaque_ports_annotation=_annotations(obj).get(OPAQUE_PORTS_ANNOTATION),
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
