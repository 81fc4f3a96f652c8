"""Port lists as Linkerd writes them in annotations (``25,587,3306-3310,http``).

Numbers and inclusive ranges are resolved at parse time; names (``http``) are kept and
resolved against a pod's container ports when asked about a port.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_OPAQUE_PORTS = "25,587,3306,4444,5432,6379,9300,11211"


class InvalidPortSpecError(ValueError):
    """A port list entry is neither a number, a range nor a port name."""


@dataclass(frozen=True, slots=True)
class PortSet:
    ranges: tuple[tuple[int, int], ...] = ()
    names: frozenset[str] = frozenset()

    def contains(self, port: int, named: Mapping[str, int] | None = None) -> bool:
        if any(lo <= port <= hi for lo, hi in self.ranges):
            return True
        if named and self.names:
            return any(named.get(name) == port for name in self.names)
        return False


def parse_port_set(text: str) -> PortSet:
    """Parse a comma-separated port list; raises :class:`InvalidPortSpecError` on bad entries."""
    ranges: list[tuple[int, int]] = []
    names: set[str] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        lo_text, sep, hi_text = item.partition("-")
        if lo_text.isdigit() and (not sep or hi_text.isdigit()):
            lo = int(lo_text)
            hi = int(hi_text) if sep else lo
            if not (0 < lo <= hi < 65536):
                raise InvalidPortSpecError(f"port range {item!r} out of order or out of range")
            ranges.append((lo, hi))
        elif item.replace("-", "").isalnum() and not item[0].isdigit():
            names.add(item)
        else:
            raise InvalidPortSpecError(f"invalid port {item!r}")
    return PortSet(tuple(ranges), frozenset(names))


def lenient_port_set(text: str | None, default: PortSet) -> PortSet:
    """Like :func:`parse_port_set` for user annotations: unparsable entries are dropped."""
    if text is None:
        return default
    good: list[str] = []
    for item in text.split(","):
        try:
            parse_port_set(item)
        except InvalidPortSpecError:
            continue
        good.append(item)
    return parse_port_set(",".join(good))


def container_ports(pod: Mapping[str, Any]) -> dict[str, int]:
    """Named container ports of a pod: ``{name: containerPort}``."""
    named: dict[str, int] = {}
    for container in _containers(pod):
        for port in container.get("ports") or ():
            name = port.get("name")
            number = port.get("containerPort")
            if name and isinstance(number, int):
                named.setdefault(str(name), number)
    return named


def _containers(pod: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    spec = pod.get("spec") or {}
    yield from spec.get("initContainers") or ()
    yield from spec.get("containers") or ()


OPAQUE_PORTS_ANNOTATION_SERVICE = "config.linkerd.io/opaque-ports"
"""The same annotation on a Service: which service ports are opaque."""
