"""Control-plane addresses (``*_SVC_ADDR``) parsed without the gRPC client.

Settings are checked at start-up whether or not a client is ever made, so the parsing lives
apart from :mod:`.channels`, which imports grpclib: a proxy without a control plane (static
identity, a fixed target) never loads it.
"""

from __future__ import annotations

__all__ = ["ControlAddressError", "split_host_port"]


class ControlAddressError(ValueError):
    """A ``*_SVC_ADDR`` that is not ``host:port``."""


def split_host_port(addr: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) to ``(host, port)``.

    The root dot of ``name.ns.svc.cluster.local.:8086`` is dropped: it is valid DNS but
    would end up in ``:authority`` and in the SNI comparison otherwise.
    """
    host, sep, port_text = addr.rpartition(":")
    if not sep or not host:
        raise ControlAddressError(f"control-plane address {addr!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ControlAddressError(f"IPv6 control-plane address {addr!r} needs [brackets]")
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ControlAddressError(f"control-plane address {addr!r} has no valid host and port")
    return host, int(port_text)
