"""Parsing the ``path`` of a ``GetDestination`` request (``host:port``).

Both RPCs accept a Kubernetes service name (``svc.ns.svc.<cluster-domain>``, optionally with
a ``<hostname>.`` prefix for one pod of a StatefulSet) or an IP. Anything else is the
caller's mistake and becomes ``INVALID_ARGUMENT`` at the gRPC boundary.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_PORT = 80


class InvalidAuthorityError(ValueError):
    """The authority is not a cluster service name or IP with a valid port."""


@dataclass(frozen=True, slots=True)
class ServiceAuthority:
    """``[hostname.]name.namespace.svc.<cluster-domain>:port``."""

    namespace: str
    name: str
    port: int
    hostname: str | None = None


@dataclass(frozen=True, slots=True)
class IpAuthority:
    ip: str
    port: int


Authority = ServiceAuthority | IpAuthority


def split_host_port(path: str) -> tuple[str, int]:
    """Split ``host[:port]`` (IPv6 in brackets, or bare); a missing port means 80."""
    if not path:
        raise InvalidAuthorityError("empty authority")
    if path.startswith("["):
        end = path.find("]")
        if end < 0:
            raise InvalidAuthorityError(f"unterminated IPv6 literal in {path!r}")
        host, rest = path[1:end], path[end + 1 :]
        if not rest:
            return host, DEFAULT_PORT
        if not rest.startswith(":"):
            raise InvalidAuthorityError(f"junk after IPv6 literal in {path!r}")
        return host, _port(rest[1:], path)
    if path.count(":") > 1:
        # A bare IPv6 address without a port.
        return path, DEFAULT_PORT
    host, sep, port = path.partition(":")
    if not sep:
        return host, DEFAULT_PORT
    return host, _port(port, path)


def _port(text: str, path: str) -> int:
    if not text.isdigit():
        raise InvalidAuthorityError(f"invalid port in {path!r}")
    port = int(text)
    if not 0 < port < 65536:
        raise InvalidAuthorityError(f"port out of range in {path!r}")
    return port


def parse_authority(path: str, cluster_domain: str) -> Authority:
    host, port = split_host_port(path.strip())
    try:
        return IpAuthority(str(ipaddress.ip_address(host)), port)
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    suffix = ["svc", *cluster_domain.strip(".").split(".")]
    if len(labels) <= len(suffix) or labels[-len(suffix) :] != suffix:
        raise InvalidAuthorityError(f"{host!r} is not a service in svc.{cluster_domain}")
    head = labels[: -len(suffix)]
    if any(not label for label in head):
        raise InvalidAuthorityError(f"empty label in {host!r}")
    if len(head) == 2:
        return ServiceAuthority(head[1], head[0], port)
    if len(head) == 3:
        return ServiceAuthority(head[2], head[1], port, hostname=head[0])
    raise InvalidAuthorityError(f"{host!r} must be <svc>.<ns>.svc.{cluster_domain}")
