"""Opaque transport on the inbound port: what a client proxy writes and a server proxy reads.

When the destination service marks an endpoint with ``opaque_transport.inbound_port``, the
client proxy connects to ``<pod ip>:<inbound port>`` (4143) rather than to the application
port, negotiates ALPN ``transport.l5d.io/v1`` inside mTLS, and writes a transport header
naming the real target port (linkerd-wire.md §1.10, §9 steps 3 and 5, §10 item 9). The
framing itself is :mod:`gossamer_api.transport_header`; this module decides *when* a header
is needed and *what* it says, and what the server side does with a received one.
"""

from __future__ import annotations

from dataclasses import dataclass

from gossamer_api.transport_header import (
    ALPN_PROTOCOL,
    SessionProtocol,
    TransportHeader,
    encode_transport_header,
)

from gossamer_proxy.mesh.endpoints import Endpoint

__all__ = [
    "ALPN_PROTOCOL",
    "ConnectPlan",
    "InboundForward",
    "TransportError",
    "inbound_forward",
    "plan_connect",
]


class TransportError(ValueError):
    """A transport header asks for something this proxy will not do."""


@dataclass(frozen=True, slots=True)
class ConnectPlan:
    """How the outbound proxy reaches one endpoint."""

    host: str
    port: int
    server_identity: str | None
    """Verify the server's certificate names this identity (``None`` = plaintext)."""
    sni: str | None
    alpn: tuple[str, ...]
    preamble: bytes
    """Bytes to write right after the handshake (the framed transport header, or nothing)."""


def plan_connect(
    endpoint: Endpoint,
    *,
    session_protocol: SessionProtocol | None,
    require_identity: str | None = None,
) -> ConnectPlan:
    """Decide address, TLS and transport header for a connection to ``endpoint``.

    ``session_protocol`` is the HTTP version being forwarded, or ``None`` for opaque TCP
    (the header then omits it, as Linkerd does for the opaque hint). A transport header is
    only used with mTLS, since it rides inside the TLS stream.
    """
    identity = endpoint.identity
    if require_identity is not None and identity != require_identity:
        raise TransportError(
            f"endpoint identity {identity!r} does not match l5d-require-id {require_identity!r}"
        )
    host = str(endpoint.ip)
    if identity is not None and endpoint.opaque_transport_port is not None:
        name = ""
        if endpoint.authority_override:
            name = endpoint.authority_override.rsplit(":", 1)[0]
        protocol = None if endpoint.protocol_hint == "opaque" else session_protocol
        header = TransportHeader(port=endpoint.port, name=name, session_protocol=protocol)
        return ConnectPlan(
            host=host,
            port=endpoint.opaque_transport_port,
            server_identity=identity,
            sni=endpoint.sni,
            alpn=(ALPN_PROTOCOL,),
            preamble=encode_transport_header(header),
        )
    return ConnectPlan(
        host=host,
        port=endpoint.port,
        server_identity=identity,
        sni=endpoint.sni if identity is not None else None,
        alpn=(),
        preamble=b"",
    )


@dataclass(frozen=True, slots=True)
class InboundForward:
    """Where the inbound proxy sends a connection that arrived with a transport header."""

    port: int
    session_protocol: SessionProtocol | None


def _under(name: str, suffix: str) -> bool:
    """Whether ``name`` is ``suffix`` or below it; an empty suffix matches nothing."""
    name = name.lower().rstrip(".")
    suffix = suffix.lower().strip(".")
    if not suffix:
        return False
    return name == suffix or name.endswith("." + suffix)


def inbound_forward(
    header: TransportHeader, *, gateway_suffixes: tuple[str, ...] = ()
) -> InboundForward:
    """Validate a received header: a local port, or a gateway name this proxy may serve."""
    if header.name and not any(_under(header.name, s) for s in gateway_suffixes):
        raise TransportError(
            f"transport header asks to forward to {header.name!r}, but this proxy is not "
            "a gateway for that name"
        )
    return InboundForward(port=header.port, session_protocol=header.session_protocol)
