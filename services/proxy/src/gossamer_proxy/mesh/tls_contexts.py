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
  client certificate.

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "Credentials",
    "client_context",
    "peer_identity",
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


def _load_credentials(context: ssl.SSLContext, credentials: Credentials) -> None:
    with (
        memory_file(credentials.chain_pem, "gossamer-chain") as cert_path,
        memory_file(credentials.key_pem, "gossamer-key") as key_path,
    ):
        context.load_cert_chain(cert_path, key_path)


def _base(purpose: ssl.Purpose, trust_anchors_pem: str) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(cadata=trust_anchors_pem)
    return context


def server_context(
    credentials: Credentials,
    trust_anchors_pem: str,
    *,
    alpn_protocols: Sequence[str] = ("transport.l5d.io/v1",),
) -> ssl.SSLContext:
    """A context for terminating meshed mTLS on the inbound side."""
    context = _base(ssl.Purpose.CLIENT_AUTH, trust_anchors_pem)
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
) -> ssl.SSLContext:
    """A context for connecting to a meshed endpoint (or a control-plane service).

    Use ``server_hostname=<expected identity>``: that is both the SNI and the name the
    server certificate must carry. ``credentials`` is ``None`` only for the very first
    Certify call, when the proxy has no certificate yet.
    """
    context = _base(ssl.Purpose.SERVER_AUTH, trust_anchors_pem)
    context.check_hostname = True
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


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str | None:
    """The peer's mesh identity: the first DNS (or URI) SAN of its verified certificate.

    Both contexts verify a peer certificate whenever one is sent (``CERT_OPTIONAL`` on the
    server, ``CERT_REQUIRED`` on the client), so ``getpeercert()`` has it decoded.
    """
    certificate = ssl_object.getpeercert()
    if not certificate:
        return None
    for entry in certificate.get("subjectAltName", ()):
        if isinstance(entry, tuple) and len(entry) == 2 and entry[0] in ("DNS", "URI"):
            return str(entry[1])
    return None
