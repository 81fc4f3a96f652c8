"""Read-only questions about a pod spec: shape checks, declared ports, probe ports.

The patch builder trusts nothing about its input (an AdmissionReview can carry anything that
decodes as JSON), so :func:`check_pod` turns a wrong shape into a
:class:`~gossamer_inject.errors.ManifestError` before any patch is built.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from gossamer_inject.errors import ManifestError

CONTAINER_LISTS = ("initContainers", "containers")


def check_pod(pod: Any) -> None:
    """Raise ManifestError unless ``pod`` has the shape of a Pod (or pod template)."""
    if not isinstance(pod, Mapping):
        raise ManifestError("pod is not an object")
    metadata = pod.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise ManifestError("metadata is not an object")
    for key in ("annotations", "labels"):
        value = metadata.get(key)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise ManifestError(f"metadata.{key} is not an object")
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ManifestError(f"metadata.{key}[{k!r}] is not a string")
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        raise ManifestError("spec is missing or not an object")
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise ManifestError("spec.containers is missing or empty")
    for field in ("initContainers", "volumes"):
        value = spec.get(field)
        if value is not None and not isinstance(value, list):
            raise ManifestError(f"spec.{field} is not a list")
    for list_name, container in _all_containers(spec):
        if not isinstance(container, Mapping):
            raise ManifestError(f"an entry of spec.{list_name} is not an object")
        ports = container.get("ports")
        if ports is None:
            continue
        if not isinstance(ports, list):
            raise ManifestError(f"ports of {container.get('name')!r} is not a list")
        for port in ports:
            if not isinstance(port, Mapping) or not _is_port(port.get("containerPort")):
                raise ManifestError(f"container {container.get('name')!r} has a bad port {port!r}")


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 65535


def _all_containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for list_name in CONTAINER_LISTS:
        for container in spec.get(list_name) or ():
            yield list_name, container


def app_containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Containers whose ports the proxy serves: regular ones and native sidecars."""
    for container in spec.get("containers") or ():
        yield container
    for container in spec.get("initContainers") or ():
        if container.get("restartPolicy") == "Always":
            yield container


def tcp_container_ports(spec: Mapping[str, Any]) -> list[int]:
    """Declared TCP container ports, in order of appearance, without repeats."""
    seen: list[int] = []
    for container in app_containers(spec):
        for port in container.get("ports") or ():
            if port.get("protocol", "TCP") == "TCP" and port["containerPort"] not in seen:
                seen.append(port["containerPort"])
    return seen


def all_container_ports(spec: Mapping[str, Any]) -> list[tuple[str, int, str]]:
    """Every declared (container name, port, protocol), for conflict checks."""
    return [
        (str(c.get("name", "")), p["containerPort"], str(p.get("protocol", "TCP")))
        for _, c in _all_containers(spec)
        for p in c.get("ports") or ()
    ]


def port_names(spec: Mapping[str, Any]) -> dict[str, int]:
    """Named container ports → numbers, for annotations that name ports."""
    names: dict[str, int] = {}
    for container in app_containers(spec):
        for port in container.get("ports") or ():
            name = port.get("name")
            if isinstance(name, str) and name:
                names.setdefault(name, port["containerPort"])
    return names


def http_probe_ports(spec: Mapping[str, Any]) -> list[int]:
    """Numeric (or named, resolved) httpGet probe ports of the app containers."""
    names = port_names(spec)
    ports: list[int] = []
    for container in app_containers(spec):
        for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = container.get(probe_name)
            if not isinstance(probe, Mapping):
                continue
            http_get = probe.get("httpGet")
            if not isinstance(http_get, Mapping):
                continue
            port = http_get.get("port")
            if isinstance(port, int) and _is_port(port):
                ports.append(port)
            elif isinstance(port, str) and port in names:
                ports.append(names[port])
            elif isinstance(port, str) and port.isdigit() and _is_port(int(port)):
                ports.append(int(port))
    return ports


def container_names(spec: Mapping[str, Any]) -> set[str]:
    return {str(c.get("name")) for _, c in _all_containers(spec)}


def container_images(spec: Mapping[str, Any]) -> list[str]:
    return [str(c.get("image", "")) for _, c in _all_containers(spec)]
