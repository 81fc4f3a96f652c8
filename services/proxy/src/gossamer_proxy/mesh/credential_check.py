"""Check a certificate chain and key with the stdlib :mod:`ssl`, inside the proxy process.

The proxy must not install a certificate that is not for its own key, does not carry its
identity as a DNS SAN, or does not chain to the trust anchors. ``cryptography`` could check
that, but once imported it stays resident (~13 MB). The OpenSSL that :mod:`ssl` already
loaded can check it as well, by doing exactly what a peer will do: load the chain and key
into a server context (OpenSSL refuses a key that does not match the leaf), then complete
a TLS 1.3 handshake in memory with a client context that trusts only the anchors and
expects the identity as the host name (no common-name fallback). A SPIFFE URI identity
(a proxy outside Kubernetes) is not a host name: the client side then verifies the chain
only, and the identity must be one of the verified leaf's URI SANs. The verified leaf's
validity period comes back from the client side's ``getpeercert()``.

OpenSSL checks validity against the system clock, as every later handshake will.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from gossamer_proxy.mesh.tls_contexts import (
    Credentials,
    certificate_sans,
    is_uri_identity,
    memory_file,
)

__all__ = ["CredentialRejected", "chain_pem_from_der", "check_credentials", "is_uri_identity"]

# OpenSSL verify codes (X509_V_ERR_*) that mean the chain does not lead to an anchor.
_NO_CHAIN_CODES = frozenset({2, 7, 18, 19, 20, 21, 24, 30, 31, 32})

_HANDSHAKE_ROUNDS = 10  # a TLS 1.3 handshake needs two; more means something is wrong


class CredentialRejected(ValueError):  # noqa: N818 - reads as what happened to the input
    """A chain or key the proxy must not use (the message says why)."""


@dataclass
class _Side:
    """One end of the in-memory handshake: a TLS object and the two buffers it talks through."""

    incoming: ssl.MemoryBIO = field(default_factory=ssl.MemoryBIO)
    outgoing: ssl.MemoryBIO = field(default_factory=ssl.MemoryBIO)


def chain_pem_from_der(leaf_der: bytes, intermediates_der: tuple[bytes, ...]) -> bytes:
    return "".join(ssl.DER_cert_to_PEM_cert(der) for der in (leaf_der, *intermediates_der)).encode(
        "ascii"
    )


def _server(identity: str, key_pem: bytes, chain_pem: bytes, side: _Side) -> ssl.SSLObject:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        with (
            memory_file(chain_pem, "gossamer-check-chain") as cert_path,
            memory_file(key_pem, "gossamer-check-key") as key_path,
        ):
            context.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as exc:
        raise CredentialRejected(
            f"certificate chain or key for {identity} do not load together: {exc.reason or exc}"
        ) from None
    return context.wrap_bio(side.incoming, side.outgoing, server_side=True)


def _client(identity: str, trust_anchors_pem: str, side: _Side) -> ssl.SSLObject:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.hostname_checks_common_name = False
    try:
        context.load_verify_locations(cadata=trust_anchors_pem)
    except (ssl.SSLError, ValueError) as exc:
        raise CredentialRejected(f"trust anchors do not load: {exc}") from None
    if is_uri_identity(identity):
        # Checked against the URI SANs after the handshake (check_credentials).
        context.check_hostname = False
        return context.wrap_bio(side.incoming, side.outgoing)
    return context.wrap_bio(side.incoming, side.outgoing, server_hostname=identity)


def _handshake(
    client: ssl.SSLObject, client_side: _Side, server: ssl.SSLObject, server_side: _Side
) -> bool:
    client_done = server_done = False
    for _ in range(_HANDSHAKE_ROUNDS):
        try:
            if not client_done:
                client.do_handshake()
                client_done = True
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLCertVerificationError as exc:
            reason = str(exc.verify_message)
            if exc.verify_code in _NO_CHAIN_CODES:
                reason = f"does not chain to the trust anchors ({reason})"
            raise CredentialRejected(reason) from None
        server_side.incoming.write(client_side.outgoing.read())
        try:
            if not server_done:
                server.do_handshake()
                server_done = True
        except ssl.SSLWantReadError:
            pass
        client_side.incoming.write(server_side.outgoing.read())
        if client_done and server_done:
            return True
    return False


def check_credentials(
    identity: str, key_pem: bytes, chain_pem: bytes, trust_anchors_pem: str
) -> Credentials:
    """Credentials from a PEM chain (leaf first) and key, or :class:`CredentialRejected`."""
    client_side, server_side = _Side(), _Side()
    client = _client(identity, trust_anchors_pem, client_side)
    server = _server(identity, key_pem, chain_pem, server_side)
    try:
        done = _handshake(client, client_side, server, server_side)
    except CredentialRejected as exc:
        raise CredentialRejected(f"certificate for {identity} rejected: {exc}") from None
    except ssl.SSLError as exc:
        raise CredentialRejected(f"certificate for {identity} rejected: {exc}") from None
    if not done:
        raise CredentialRejected(f"certificate check for {identity} did not complete")
    peer = client.getpeercert()
    leaf_der = client.getpeercert(binary_form=True)
    if not peer or not leaf_der:
        raise CredentialRejected(f"certificate for {identity} was not verified")
    if is_uri_identity(identity):
        uris = list(certificate_sans(peer, ("URI",)))
        if identity not in uris:
            raise CredentialRejected(
                f"certificate for {identity} rejected: its URI SANs are {uris or 'none'}"
            )
    return Credentials(
        identity=identity,
        key_pem=key_pem,
        chain_pem=chain_pem,
        leaf_der=leaf_der,
        not_before=float(ssl.cert_time_to_seconds(str(peer["notBefore"]))),
        not_after=float(ssl.cert_time_to_seconds(str(peer["notAfter"]))),
    )
