"""Where a connection goes and how the proxy gets there: the outbound/inbound seam.

Forwarding is split into three steps so that discovery and mTLS can slot in later without
touching the protocol code:

1. :func:`original_destination` recovers the address the client dialled (``SO_ORIGINAL_DST``
   behind proxy-init's iptables REDIRECT).
2. A :class:`Resolver` turns that target (and, for HTTP, the authority) into endpoints. Today
   the :class:`DirectResolver` returns the target itself; the Destination-backed resolver
   with P2C load balancing replaces it.
3. A :class:`Connector` opens a transport to one endpoint (plain TCP here; the TLS connector
   wraps the same call).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from .config import Endpoint
from .errors import ProxyError, ProxyErrorKind

__all__ = [
    "Connector",
    "DirectResolver",
    "Resolver",
    "is_loop",
    "original_destination",
    "set_nodelay",
]

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same value
P = TypeVar("P", bound=asyncio.BaseProtocol)


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def parse_sockaddr(raw: bytes) -> Endpoint:
    """Decode a ``struct sockaddr_in`` / ``sockaddr_in6`` as returned by SO_ORIGINAL_DST."""
    family = struct.unpack_from("=H", raw, 0)[0]
    port = struct.unpack_from("!H", raw, 2)[0]
    if family == socket.AF_INET:
        return Endpoint(str(ipaddress.IPv4Address(raw[4:8])), port)
    if family == socket.AF_INET6:
        return Endpoint(str(ipaddress.IPv6Address(raw[8:24])), port)
    raise ValueError(f"unexpected address family {family} in SO_ORIGINAL_DST")


def original_destination(transport: asyncio.BaseTransport) -> Endpoint:
    """The address the client originally dialled.

    Without a NAT redirect (a client connecting straight to the listener) the kernel
    reports no original destination, and the local address is the honest answer: the
    caller recognises it as a loop.
    """
    sock = transport.get_extra_info("socket")
    sockname = transport.get_extra_info("sockname")
    if sock is not None:
        try:
            if sock.family == socket.AF_INET6:
                raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
            else:
                raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            return parse_sockaddr(raw)
        except OSError:
            pass
    return Endpoint(str(sockname[0]), int(sockname[1]))


def is_loop(target: Endpoint, listener: Endpoint, local: Endpoint) -> bool:
    """Whether forwarding to ``target`` would come straight back to this listener."""
    if target.port != listener.port:
        return False
    if target.host == local.host:
        return True
    try:
        ip = ipaddress.ip_address(target.host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified or str(ip) == listener.host


class Resolver(Protocol):
    """Turns an original destination (and HTTP authority, if any) into endpoints."""

    def resolve(self, target: Endpoint, authority: bytes | None) -> Sequence[Endpoint]: ...


class DirectResolver:
    """Forward to the original destination itself (no discovery)."""

    def resolve(self, target: Endpoint, authority: bytes | None) -> Sequence[Endpoint]:
        return (target,)


class Connector:
    """Opens plain TCP connections with a connect timeout and ``TCP_NODELAY``."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    async def open(
        self, endpoint: Endpoint, factory: Callable[[], P]
    ) -> tuple[asyncio.Transport, P]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                transport, protocol = await loop.create_connection(
                    factory, endpoint.host, endpoint.port
                )
        except TimeoutError:
            raise ProxyError(ProxyErrorKind.CONNECT_TIMEOUT, str(endpoint)) from None
        except ConnectionRefusedError:
            raise ProxyError(ProxyErrorKind.CONNECT_REFUSED, str(endpoint)) from None
        except OSError as exc:
            raise ProxyError(
                ProxyErrorKind.CONNECT_FAILED, f"{endpoint}: {exc.strerror or exc}"
            ) from None
        set_nodelay(transport)
        return transport, protocol

    async def open_socket(self, endpoint: Endpoint) -> socket.socket:
        """A connected non-blocking socket, for the zero-copy opaque path."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(self.timeout):
                await loop.sock_connect(sock, (endpoint.host, endpoint.port))
        except TimeoutError:
            sock.close()
            raise ProxyError(ProxyErrorKind.CONNECT_TIMEOUT, str(endpoint)) from None
        except ConnectionRefusedError:
            sock.close()
            raise ProxyError(ProxyErrorKind.CONNECT_REFUSED, str(endpoint)) from None
        except OSError as exc:
            sock.close()
            raise ProxyError(
                ProxyErrorKind.CONNECT_FAILED, f"{endpoint}: {exc.strerror or exc}"
            ) from None
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
