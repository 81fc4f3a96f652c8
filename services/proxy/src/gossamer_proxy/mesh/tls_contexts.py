"""Mesh TLS contexts built from the in-memory identity (linkerd-wire.md §2 "Meshed mTLS").

* Server side: TLS 1.3 only, presents the proxy's certificate chain, *requests* a client
  certificate and verifies it against the trust anchors when one is sent, but admits
  clients without one (``CERT_OPTIONAL``) so that policy, not the handshake, decides
  whether unauthenticated TLS is allowed. ALPN ``transport.l5d.io/v1`` is accepted when a
  client offers it (a transport header follows); the accept step refuses such a connection
  unless the client presented a verified certificate, since the header chooses the port.
* Client side: TLS 1.3 only, verifies the server chain against the trust anchors and the
  server's identity as a DNS SAN; the caller passes the identity as ``server_hostname``, so
  it is also the SNI, as Linkerd does. The proxy's own certificate is presented as the
  client certificate. A server whose identity is a SPIFFE URI (an ExternalWorkload) is
  reached with its TLS server name as SNI: such a context (``check_name=False``) still
  verifies the chain, and the caller checks the identity among the certificate's URI and
  DNS SANs (:func:`peer_has_identity`) before a byte is sent.

Both contexts trust the mesh trust anchors and nothing else: no system CA store (which
:func:`ssl.create_default_context` would add to a client context) and no
``SSLKEYLOGFILE``.

Between proxies, TLS 1.3 sessions are resumed (tickets): a client context is a
:class:`ResumingContext`, to which the connector offers the session of its last connection
to the same peer; a resumed handshake skips both certificate signatures and chain checks.
The identity a resumed session carries is the one verified in its full handshake, and
:func:`peer_identity` refuses it once that certificate has expired. Tickets are bound to
the server context that issued them, which is rebuilt whenever the certificate changes.

The proxy process holds credentials as PEM and DER bytes only: parsing, key generation and
chain checks happen in a short-lived helper process (:mod:`.credential_helper`), so the
``cryptography`` package never becomes resident in the sidecar. A peer's identity is read
from the certificate :mod:`ssl` already verified (``getpeercert()``).

Python's :mod:`ssl` loads keys only from files. The key is written to an anonymous
memory file (``memfd_create``) that is read once and closed: it never touches a file
system and never leaves the process, matching "keys never leave the proxy's memory".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "Credentials",
    "ResumingContext",
    "certificate_sans",
    "client_context",
    "is_uri_identity",
    "load_credentials",
    "peer_has_identity",
    "peer_identity",
    "peer_names",
    "server_context",
    "verified_server_identity",
]


@dataclass(frozen=True, slots=True)
class Credentials:
    """A private key and the certificate chain that the identity service issued for it.

    Only checked credentials are built: see :mod:`.credential_helper`, which parses and
    verifies them and fills in the validity period.
    """

    identity: str
    key_pem: bytes
    chain_pem: bytes  # the leaf first, then its intermediates
    leaf_der: bytes
    not_before: float  # seconds since the epoch
    not_after: float


@contextlib.contextmanager
def memory_file(data: bytes, name: str) -> Iterator[str]:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def load_credentials(context: ssl.SSLContext, credentials: Credentials) -> None:
    """Present ``credentials`` (chain and key) from ``context`` on its next handshakes."""
    _load_credentials(context, credentials)


def _load_credentials(context: ssl.SSLContext, credentials: Credentials) -> None:
    with (
        memory_file(credentials.chain_pem, "gossamer-chain") as cert_path,
        memory_file(credentials.key_pem, "gossamer-key") as key_path,
    ):
        context.load_cert_chain(cert_path, key_path)


#: Sessions queued per server name and not yet taken (a start that failed leaves one behind).
MAX_QUEUED_SESSIONS = 64


class ResumingContext(ssl.SSLContext):
    """A client context that offers a queued TLS session to its next handshake by name.

    ``asyncio``'s and uvloop's ``start_tls`` create the TLS object in a callback they
    schedule before returning to the loop, in call order; :meth:`offer` right before
    ``start_tls`` therefore reaches that very handshake. Each offer (``None`` included)
    is taken by exactly one handshake with the same server name, so the order holds.
    """

    _queued: dict[str, deque[ssl.SSLSession | None]]

    def offer(self, server_name: str, session: ssl.SSLSession | None) -> None:
        queued = self.__dict__.setdefault("_queued", {})
        waiting = queued.get(server_name)
        if waiting is None:
            waiting = queued[server_name] = deque(maxlen=MAX_QUEUED_SESSIONS)
        waiting.append(session)

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        if session is None and not server_side and isinstance(server_hostname, str):
            waiting = self.__dict__.get("_queued", {}).get(server_hostname)
            if waiting:
                session = waiting.popleft()
                if not waiting:
                    del self._queued[server_hostname]
        return super().wrap_bio(
            incoming,
            outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session,
        )


_C = TypeVar("_C", bound=ssl.SSLContext)


def _base(context: _C, trust_anchors_pem: str) -> _C:
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(cadata=trust_anchors_pem)  # the mesh anchors only
    return context


def server_context(
    credentials: Credentials,
    trust_anchors_pem: str,
    *,
    alpn_protocols: Sequence[str] = ("transport.l5d.io/v1",),
) -> ssl.SSLContext:
    """A context for terminating meshed mTLS on the inbound side."""
    context = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), trust_anchors_pem)
    context.verify_mode = ssl.CERT_OPTIONAL
    _load_credentials(context, credentials)
    if alpn_protocols:
        context.set_alpn_protocols(list(alpn_protocols))
    return context


def client_context(
    credentials: Credentials | None,
    trust_anchors_pem: str,
    *,
    alpn_protocols: Sequence[str] = (),
    check_name: bool = True,
) -> ResumingContext:
    """A context for connecting to a meshed endpoint (or a control-plane service).

    Use ``server_hostname=<expected identity>``: that is both the SNI and the name the
    server certificate must carry. ``credentials`` is ``None`` only for the very first
    Certify call, when the proxy has no certificate yet. With ``check_name=False`` the
    SNI is only a server name (a URI identity's ``serverName``): the chain is still
    verified, and the caller must check :func:`peer_has_identity` after the handshake.
    """
    context = _base(ResumingContext(ssl.PROTOCOL_TLS_CLIENT), trust_anchors_pem)
    context.check_hostname = check_name
    context.verify_mode = ssl.CERT_REQUIRED
    if credentials is not None:
        _load_credentials(context, credentials)
    if alpn_protocols:
        context.set_alpn_protocols(list(alpn_protocols))
    return context


def verified_server_identity(transport: asyncio.BaseTransport | None) -> str | None:
    """The mesh identity a client connection's server proved (``None``: no mesh mTLS).

    Client contexts verify the chain and the expected name before the connection is
    handed over, so a certificate here is a verified one.
    """
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    return peer_identity(ssl_object) if ssl_object is not None else None


def peer_identity(
    ssl_object: ssl.SSLObject | ssl.SSLSocket, now: float | None = None
) -> str | None:
    """The peer's mesh identity: the first DNS (or URI) SAN of its verified certificate.

    Both contexts verify a peer certificate whenever one is sent (``CERT_OPTIONAL`` on the
    server, ``CERT_REQUIRED`` on the client), so ``getpeercert()`` has it decoded. A resumed
    session carries the certificate of its full handshake, unchecked since: once that has
    expired (``now``, seconds since the epoch) the session proves no identity.
    """
    names = peer_names(ssl_object, now)
    return names[0] if names else None


def is_uri_identity(identity: str) -> bool:
    """A SPIFFE URI (``spiffe://…``) rather than a DNS-like name."""
    return identity.startswith("spiffe://")


def certificate_sans(
    certificate: Mapping[str, Any] | None, kinds: tuple[str, ...] = ("DNS", "URI")
) -> tuple[str, ...]:
    """The SANs of the ``kinds`` given (``"DNS"``, ``"URI"``) of a certificate as
    ``getpeercert()`` decodes it, in certificate order. The one SAN reader of the proxy."""
    if not certificate:
        return ()
    return tuple(
        str(entry[1])
        for entry in certificate.get("subjectAltName", ())
        if isinstance(entry, tuple) and len(entry) == 2 and entry[0] in kinds
    )


def _verified_certificate(
    ssl_object: ssl.SSLObject | ssl.SSLSocket, now: float | None
) -> dict[str, Any] | None:
    """The peer's verified certificate, ``None`` for an expired resumed session's."""
    certificate = ssl_object.getpeercert()
    if not certificate:
        return None
    if ssl_object.session_reused:
        not_after = certificate.get("notAfter")
        if not isinstance(not_after, str):
            return None
        if ssl.cert_time_to_seconds(not_after) <= (time.time() if now is None else now):
            return None
    return dict(certificate)


def peer_names(
    ssl_object: ssl.SSLObject | ssl.SSLSocket, now: float | None = None
) -> tuple[str, ...]:
    """Every DNS and URI SAN of the peer's verified certificate, in certificate order
    (none for an expired resumed session; see :func:`peer_identity`)."""
    return certificate_sans(_verified_certificate(ssl_object, now))


def peer_has_identity(
    ssl_object: ssl.SSLObject | ssl.SSLSocket, identity: str, now: float | None = None
) -> bool:
    """Whether the verified peer certificate carries ``identity``, compared exactly: a
    ``spiffe://`` identity against its URI SANs only, any other against its DNS SANs only
    (a URI SAN never proves a DNS-like identity, nor a DNS SAN a SPIFFE ID)."""
    kind = "URI" if is_uri_identity(identity) else "DNS"
    return identity in certificate_sans(_verified_certificate(ssl_object, now), (kind,))
