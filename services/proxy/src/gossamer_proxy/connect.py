"""Where a connection goes and how the proxy gets there: the outbound/inbound seam.

Forwarding is split into three steps so that discovery and mTLS can slot in later without
touching the protocol code:

1. :func:`original_destination` recovers the address the client dialled (``SO_ORIGINAL_DST``
   behind proxy-init's iptables REDIRECT).
2. A :class:`Resolver` turns that target (and, for HTTP, the authority) into endpoints. The
   :class:`DirectResolver` returns the target itself; with a destination service the
   outbound side resolves through :mod:`.outbound.discovery` instead (per-request P2C
   picks whose :class:`UpstreamTls` plan is passed to :meth:`Connector.open`).
3. A :class:`Connector` opens a transport to one endpoint. An endpoint with an
   :class:`UpstreamTls` plan (from discovery's TLS hint, or the fixed identity of static
   mode) is reached over mesh mTLS: TLS 1.3, SNI = the server name, the server's certificate
   must name the expected identity, and with an opaque-transport port the connection goes to
   the peer proxy's inbound port with ALPN ``transport.l5d.io/v1`` and a transport header
   naming the real port (:func:`gossamer_proxy.mesh.transport.plan_connect`). Plans are
   keyed by the logical endpoint, so the HTTP/1 pool keeps one set of connections per
   target port even when they all go to the same ``<ip>:4143``.

An mTLS connection is first held by a :class:`_Handshake` placeholder: the caller's
protocol is only created and attached once the peer's identity and ALPN are checked and the
transport header is written. Protocols that speak first in ``connection_made`` (an HTTP/2
client sends its preface there) would otherwise put their bytes ahead of the header, and
would speak to a peer whose identity is not yet known.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

from .config import Endpoint
from .connect_deadline import ConnectDeadline
from .errors import ProxyError, ProxyErrorKind
from .mesh.tls_contexts import peer_has_identity, peer_names
from .mesh.transport import ConnectPlan

if TYPE_CHECKING:
    from .local_identity import LocalIdentity

__all__ = [
    "Connector",
    "DirectResolver",
    "Resolver",
    "UpstreamTls",
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


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """How to reach one logical endpoint over mesh mTLS."""

    connect_to: Endpoint
    server_identity: str
    sni: str
    alpn: tuple[str, ...] = ()
    preamble: bytes = b""
    """Written right after the handshake (a framed transport header), before any request."""

    @classmethod
    def from_plan(cls, plan: ConnectPlan) -> UpstreamTls:
        assert plan.server_identity is not None
        return cls(
            connect_to=Endpoint(plan.host, plan.port),
            server_identity=plan.server_identity,
            sni=plan.sni or plan.server_identity,
            alpn=plan.alpn,
            preamble=plan.preamble,
        )


class _Handshake(asyncio.Protocol):
    """Holds a fresh connection, reading paused, until it is verified and handed over.

    Anything that still arrives (a peer that speaks first) is kept and replayed to the real
    protocol, so nothing is lost; a connection lost meanwhile is reported as a failed connect.
    """

    def __init__(self) -> None:
        self.held: list[bytes] = []
        self.eof = False
        self.lost = False
        #: The TLS handshake completed (the TLS transport was made), hand-over still to come.
        self.secured = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if transport.get_extra_info("ssl_object") is not None:
            self.secured = True
        cast(asyncio.Transport, transport).pause_reading()

    def data_received(self, data: bytes) -> None:
        self.held.append(data)

    def eof_received(self) -> bool:
        # The server sent all it will before the hand-over: replayed to the real protocol,
        # which decides whether a plain connection stays half-open. A TLS transport closes
        # itself now whatever is returned (see halfclose).
        self.eof = True
        return not self.secured

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def hand_over(self, transport: asyncio.Transport, protocol: P) -> P:
        """Attach ``protocol`` as if it had been there from the start; replay what was held."""
        transport.set_protocol(protocol)
        transport.resume_reading()  # before connection_made, which may pause it again
        protocol.connection_made(transport)
        if isinstance(protocol, asyncio.Protocol):
            for data in self.held:
                protocol.data_received(data)
            if self.eof and not protocol.eof_received():
                transport.close()
        self.held = []
        return protocol


#: Peers whose last TLS session is kept for resumption (the oldest is dropped first).
MAX_REMEMBERED_PEERS = 1024

_SessionKey = tuple[Endpoint, str, tuple[str, ...]]


class TlsSessions:
    """The session to resume per peer (address, server name, ALPN), bounded in peers.

    A TLS 1.3 ticket arrives after the handshake, so a new connection's session is read
    only when the next connection to that peer starts; until that connection has its ticket
    (a burst opens several before any has read a byte), the last ticketed session stays
    the one offered.
    """

    def __init__(self, limit: int = MAX_REMEMBERED_PEERS) -> None:
        self.limit = limit
        self._latest: dict[_SessionKey, ssl.SSLObject] = {}
        self._ticketed: dict[_SessionKey, tuple[ssl.SSLContext, ssl.SSLSession]] = {}

    def remember(self, key: _SessionKey, ssl_object: ssl.SSLObject) -> None:
        self._latest.pop(key, None)
        self._latest[key] = ssl_object
        while len(self._latest) > self.limit:
            del self._latest[next(iter(self._latest))]

    def forget(self, key: _SessionKey) -> None:
        self._latest.pop(key, None)
        self._ticketed.pop(key, None)

    def resumable(self, key: _SessionKey, context: ssl.SSLContext) -> ssl.SSLSession | None:
        """A ticketed session from ``context`` (a renewed certificate starts afresh)."""
        latest = self._latest.get(key)
        if latest is not None and latest.context is context:
            session = latest.session
            if session is not None and session.has_ticket:
                del self._latest[key]
                self._ticketed.pop(key, None)
                self._ticketed[key] = (context, session)
                while len(self._ticketed) > self.limit:
                    del self._ticketed[next(iter(self._ticketed))]
        elif latest is not None:
            del self._latest[key]
        ticketed = self._ticketed.get(key)
        if ticketed is None:
            return None
        if ticketed[0] is not context:
            del self._ticketed[key]
            return None
        return ticketed[1]

    def __len__(self) -> int:
        return len(self._latest.keys() | self._ticketed.keys())


class Connector:
    """Opens connections with a connect timeout and ``TCP_NODELAY``; mTLS where planned."""

    def __init__(self, timeout: float, identity: LocalIdentity | None = None) -> None:
        self.timeout = timeout
        self.identity = identity
        #: Logical endpoint → mTLS plan. Endpoints without a plan get plaintext TCP.
        self.tls_plans: dict[Endpoint, UpstreamTls] = {}
        self._sessions = TlsSessions()

    def tls_plan(self, endpoint: Endpoint) -> UpstreamTls | None:
        return self.tls_plans.get(endpoint) if self.identity is not None else None

    def meshed(self, endpoint: Endpoint, tls: UpstreamTls | None = None) -> bool:
        """Whether :meth:`open` would reach ``endpoint`` over mesh mTLS (with ``tls``)."""
        if self.identity is None:
            return False
        return tls is not None or endpoint in self.tls_plans

    async def open(
        self, endpoint: Endpoint, factory: Callable[[], P], *, tls: UpstreamTls | None = None
    ) -> tuple[asyncio.Transport, P]:
        """Connect to ``endpoint``; ``tls`` (a discovered endpoint's plan) overrides the table."""
        plan = tls if tls is not None and self.identity is not None else self.tls_plan(endpoint)
        if plan is not None:
            return await self._open_tls(endpoint, plan, factory)
        loop = asyncio.get_running_loop()
        try:
            async with ConnectDeadline(self.timeout) as deadline:
                sock = await _connect_socket(endpoint, deadline)
                # Held like an mTLS connection: uvloop may read a transport made from a
                # connected socket before its connection_made, so a peer that speaks first
                # would reach a protocol not yet set up.
                transport, holder = await loop.create_connection(_Handshake, sock=sock)
        except TimeoutError:
            raise ProxyError(ProxyErrorKind.CONNECT_TIMEOUT, str(endpoint)) from None
        except ConnectionRefusedError:
            raise ProxyError(ProxyErrorKind.CONNECT_REFUSED, str(endpoint)) from None
        except OSError as exc:
            raise ProxyError(
                ProxyErrorKind.CONNECT_FAILED, f"{endpoint}: {exc.strerror or exc}"
            ) from None
        if holder.lost:
            raise ProxyError(
                ProxyErrorKind.CONNECT_FAILED, f"{endpoint}: closed right after the connect"
            )
        set_nodelay(transport)
        return transport, holder.hand_over(transport, factory())

    async def _open_tls(
        self, endpoint: Endpoint, plan: UpstreamTls, factory: Callable[[], P]
    ) -> tuple[asyncio.Transport, P]:
        assert self.identity is not None
        # A URI identity (an ExternalWorkload) is not a host name: SNI is its server name,
        # and the identity is checked among the certificate's SANs below.
        check_name = plan.sni == plan.server_identity
        context = self.identity.client_context(plan.alpn, check_name=check_name)
        if context is None:
            raise ProxyError(ProxyErrorKind.CONNECT_FAILED, "no mesh certificate yet")
        target = plan.connect_to
        loop = asyncio.get_running_loop()
        key = (target, plan.sni, plan.alpn)
        try:
            async with ConnectDeadline(self.timeout) as deadline:
                sock = await _connect_socket(target, deadline)
                raw, holder = await loop.create_connection(_Handshake, sock=sock)
                deadline.watch(sock, connecting=False, finished=lambda: holder.secured)
                # Offered right before start_tls, whose handshake takes it (see ResumingContext).
                context.offer(plan.sni, self._sessions.resumable(key, context))
                try:
                    started = await loop.start_tls(
                        raw,
                        holder,
                        context,
                        server_hostname=plan.sni,
                        # A backstop only: the deadline above judges the handshake.
                        ssl_handshake_timeout=2 * self.timeout,
                    )
                except BaseException:
                    raw.close()
                    raise
                if started is None:
                    raise ConnectionResetError("closed during the TLS handshake")
                transport = started
        except TimeoutError:
            raise ProxyError(ProxyErrorKind.CONNECT_TIMEOUT, str(target)) from None
        except ConnectionRefusedError:
            raise ProxyError(ProxyErrorKind.CONNECT_REFUSED, str(target)) from None
        except ssl.SSLError as exc:
            raise ProxyError(
                ProxyErrorKind.CONNECT_FAILED, f"{target}: TLS with {plan.sni}: {exc}"
            ) from None
        except OSError as exc:
            raise ProxyError(
                ProxyErrorKind.CONNECT_FAILED, f"{target}: {exc.strerror or exc}"
            ) from None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or not peer_has_identity(ssl_object, plan.server_identity):
            found = peer_names(ssl_object) if ssl_object is not None else ()
            self._sessions.forget(key)
            transport.abort()
            raise ProxyError(
                ProxyErrorKind.IDENTITY_MISMATCH,
                f"{target} presented {', '.join(found) or 'no identity'}, "
                f"expected {plan.server_identity!r}",
            )
        if plan.alpn and ssl_object.selected_alpn_protocol() not in plan.alpn:
            transport.abort()
            raise ProxyError(
                ProxyErrorKind.CONNECT_FAILED,
                f"{target} did not accept ALPN {plan.alpn[0]} (not a mesh proxy's inbound port?)",
            )
        if holder.lost:
            raise ProxyError(
                ProxyErrorKind.CONNECT_FAILED, f"{target}: closed right after the TLS handshake"
            )
        set_nodelay(transport)
        self._sessions.remember(key, ssl_object)
        if plan.preamble:
            transport.write(plan.preamble)
        return transport, holder.hand_over(transport, factory())

    async def open_socket(self, endpoint: Endpoint) -> socket.socket:
        """A connected non-blocking socket, for the zero-copy opaque path."""
        try:
            async with ConnectDeadline(self.timeout) as deadline:
                sock = await _connect_socket(endpoint, deadline)
        except TimeoutError:
            raise ProxyError(ProxyErrorKind.CONNECT_TIMEOUT, str(endpoint)) from None
        except ConnectionRefusedError:
            raise ProxyError(ProxyErrorKind.CONNECT_REFUSED, str(endpoint)) from None
        except OSError as exc:
            raise ProxyError(
                ProxyErrorKind.CONNECT_FAILED, f"{endpoint}: {exc.strerror or exc}"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


async def _connect_socket(endpoint: Endpoint, deadline: ConnectDeadline) -> socket.socket:
    """A non-blocking TCP socket connected to ``endpoint``, watched by ``deadline``.

    The socket is closed if the connect fails or is cancelled (the deadline expired).
    """
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        deadline.watch(sock, connecting=True)
        await loop.sock_connect(sock, (endpoint.host, endpoint.port))
    except BaseException:
        sock.close()
        raise
    return sock
