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

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from gossamer_tls import certificates_to_pem, private_key_to_pem
from gossamer_tls.pem import certificate_to_der

__all__ = [
    "Credentials",
    "client_context",
    "peer_identity",
    "server_context",
    "verified_server_identity",
]


@dataclass(frozen=True, slots=True)
class Credentials:
    """A private key and the certificate chain that the identity service issued for it."""

    identity: str
    private_key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]

    @property
    def not_before(self) -> float:
        return self.leaf.not_valid_before_utc.timestamp()

    @property
    def not_after(self) -> float:
        return self.leaf.not_valid_after_utc.timestamp()

    @property
    def leaf_der(self) -> bytes:
        return certificate_to_der(self.leaf)


@contextlib.contextmanager
def _memory_file(data: bytes, name: str) -> Iterator[str]:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _load_credentials(context: ssl.SSLContext, credentials: Credentials) -> None:
    chain = certificates_to_pem((credentials.leaf, *credentials.intermediates))
    with (
        _memory_file(chain, "gossamer-chain") as cert_path,
        _memory_file(private_key_to_pem(credentials.private_key), "gossamer-key") as key_path,
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
    """The peer's mesh identity: the first DNS (or URI) SAN of its verified certificate."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    certificate = x509.load_der_x509_certificate(der)
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for name in san:
        if isinstance(name, x509.DNSName | x509.UniformResourceIdentifier):
            return str(name.value)
    return None
