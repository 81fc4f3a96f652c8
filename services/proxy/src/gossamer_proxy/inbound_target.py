"""Where the inbound side may forward a connection (sans-io; issue 16, linkerd-wire.md §9).

The inbound proxy forwards to the pod's own address, never to its loopback: a service that
listens on ``127.0.0.1`` only is meant to be unreachable from the network, and the admin
server trusts loopback peers with ``POST /shutdown``. Two kinds of connection arrive:

* **redirected** by iptables: the target is the original destination (``SO_ORIGINAL_DST``),
  which for traffic from the network is one of the pod's IPs. A loopback or unspecified
  original destination is never honoured;
* **transport header** (mutually authenticated mTLS to the inbound port): the header names
  a port, and the target is that port on the *local address the client reached* — the pod
  IP for a client from the network, as in Linkerd. Only a client already inside the pod
  (which reached the proxy over loopback) gets a loopback target, which it could dial itself.

Either way the proxy never forwards to one of its own listeners (inbound, outbound, admin),
and with ``LINKERD2_PROXY_INBOUND_IPS`` set the target must be one of those addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

from .config import Endpoint

__all__ = ["canonical_host", "header_target", "refuse_target"]


def canonical_host(host: str) -> str:
    """An IP in its canonical text form; an IPv4-mapped IPv6 address as plain IPv4."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _is_loopback_or_unspecified(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(canonical_host(host))
    except ValueError:
        return True  # not an address at all: nothing to forward to
    return ip.is_loopback or ip.is_unspecified


def header_target(local: Endpoint, port: int) -> Endpoint:
    """The target of a transport-header connection: ``port`` on the address the client reached."""
    return Endpoint(canonical_host(local.host), port)


def refuse_target(
    target: Endpoint,
    *,
    redirected: bool,
    own_ports: Collection[int],
    pod_ips: Collection[str],
) -> str | None:
    """Why the inbound side must not forward to ``target`` (``None``: it may).

    ``redirected`` is true when ``target`` came from ``SO_ORIGINAL_DST``; ``own_ports`` are
    the ports the proxy itself listens on; ``pod_ips`` is ``LINKERD2_PROXY_INBOUND_IPS`` in
    :func:`canonical_host` form (empty: not configured).
    """
    if target.port in own_ports:
        return f"port {target.port} is one of the proxy's own listeners"
    if redirected and _is_loopback_or_unspecified(target.host):
        return f"original destination {target} is not a pod address"
    if pod_ips and canonical_host(target.host) not in pod_ips:
        return f"{target.host} is not one of the pod's addresses"
    return None
