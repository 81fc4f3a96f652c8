"""The ``config.linkerd.io/opaque-ports`` annotation for pods and Services (wire §4.2).

When a pod or Service does not say which of its ports are opaque, the webhook writes the
namespace's value or the mesh default list, filtered to the ports the object really exposes,
so that the destination service tells clients to skip protocol detection on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gossamer_inject import annotations as a
from gossamer_inject import jsonpatch
from gossamer_inject.errors import ManifestError
from gossamer_inject.values import PortRange, parse_port_ranges


def filter_exposed(ranges: tuple[PortRange, ...], exposed: list[int]) -> str:
    """The exposed ports that fall in ``ranges``, sorted, comma-separated."""
    return ",".join(str(p) for p in sorted(set(exposed)) if any(p in r for r in ranges))


def service_ports(service: Mapping[str, Any]) -> list[tuple[int, int | None]]:
    """(port, numeric targetPort or None) for each TCP port of a Service."""
    spec = service.get("spec")
    if not isinstance(spec, Mapping):
        raise ManifestError("Service spec is missing or not an object")
    out: list[tuple[int, int | None]] = []
    for entry in spec.get("ports") or ():
        if not isinstance(entry, Mapping):
            raise ManifestError("a Service port is not an object")
        port = entry.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port <= 65535:
            raise ManifestError(f"Service port {port!r} is not a port number")
        if entry.get("protocol", "TCP") != "TCP":
            continue
        target = entry.get("targetPort")
        out.append((port, target if isinstance(target, int) and 0 < target <= 65535 else None))
    return out


def service_patch(
    service: Mapping[str, Any], *, namespace_annotations: Mapping[str, str], default: str
) -> list[jsonpatch.Op]:
    """Ops adding the opaque-ports annotation to a Service that lacks one (maybe none)."""
    metadata = service.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise ManifestError("metadata is not an object")
    annotations = metadata.get("annotations")
    if annotations is not None and not isinstance(annotations, Mapping):
        raise ManifestError("metadata.annotations is not an object")
    if annotations and a.OPAQUE_PORTS in annotations:
        return []
    inherited = namespace_annotations.get(a.OPAQUE_PORTS)
    if inherited is not None:
        value = inherited
    else:
        ranges = parse_port_ranges(a.OPAQUE_PORTS, default)
        value = ",".join(
            str(port)
            for port, target in service_ports(service)
            if any((target if target is not None else port) in r for r in ranges)
        )
    if not value:
        return []
    ops: list[jsonpatch.Op] = []
    if "metadata" not in service:
        ops.append(jsonpatch.add("/metadata", {}))
    if not annotations:
        ops.append(jsonpatch.add("/metadata/annotations", {}))
    ops.append(jsonpatch.add(jsonpatch.pointer("metadata", "annotations", a.OPAQUE_PORTS), value))
    return ops
