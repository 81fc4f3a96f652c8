"""gRPC channels to the control plane (identity, destination, policy), on grpclib.

Plaintext when the service has no ``*_SVC_NAME`` (local mode, or a loopback address, where
Linkerd skips TLS too); otherwise TLS 1.3 with the trust anchors as roots and the service
identity as both SNI and the name the server certificate must carry, plus the proxy's own
certificate as client certificate once it has one (:func:`.tls_contexts.client_context`).
Channels opened before the first certificate (discovery and policy start with the proxy)
take their credentials from a callable and present the current certificate on every new
connection, so the control plane sees the proxy's identity (``client_id``) from the first
reconnect after certification, and a renewed certificate from the next one.

ALPN ``h2`` is offered but, unlike grpcio, not required: a control plane that terminates TLS
without ALPN (Linkerd's control plane behind its own sidecar, linkerd-wire.md §10 item 10)
is still spoken to in HTTP/2 by prior knowledge.

HTTP/2 keepalive: while a watch is open the channel sends a PING every
:data:`KEEPALIVE_INTERVAL` and drops the connection when no ACK comes within
:data:`KEEPALIVE_TIMEOUT`, so a silently dead control-plane connection is noticed and the
next call reconnects. The interval stays at the 5-minute minimum that grpc servers (grpcio
and grpc-go alike) enforce for pings on a stream without data; pinging more often makes
them answer GOAWAY ``too_many_pings``.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.protocol import H2Protocol

from gossamer_proxy.mesh.control_address import ControlAddressError, split_host_port
from gossamer_proxy.mesh.tls_contexts import Credentials, client_context, load_credentials

__all__ = [
    "KEEPALIVE_INTERVAL",
    "KEEPALIVE_TIMEOUT",
    "ControlAddressError",
    "control_channel",
    "split_host_port",
]

KEEPALIVE_INTERVAL = 300.0
KEEPALIVE_TIMEOUT = 20.0


def is_loopback_host(host: str) -> bool:
    """The name ``localhost`` (with or without the trailing dot).

    Linkerd also counts loopback IP literals; here they keep TLS, so that tests can run a TLS
    control plane on 127.0.0.1. The chart and the injector only ever write ``localhost.``.
    """
    return host.rstrip(".").lower() == "localhost"


class _PresentingChannel(Channel):
    """A TLS channel that presents the proxy's current certificate on each new connection.

    The SSL context is the channel's own; loading a new certificate chain into it changes
    what new handshakes present, not the connections already open.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        context: ssl.SSLContext,
        config: Configuration,
        credentials: Callable[[], Credentials | None],
    ) -> None:
        super().__init__(host, port, ssl=context, config=config)
        self._context = context
        self._credentials = credentials
        self._presented: Credentials | None = None

    async def _create_connection(self) -> H2Protocol:
        current = self._credentials()
        if current is not None and current is not self._presented:
            load_credentials(self._context, current)
            self._presented = current
        return await super()._create_connection()


def control_channel(
    addr: str,
    *,
    server_name: str | None,
    trust_anchors_pem: str | None,
    credentials: Credentials | Callable[[], Credentials | None] | None = None,
) -> Channel:
    """A channel to ``addr``; it connects lazily on the first call and reconnects on the next.

    Close it with ``channel.close()`` (synchronous) when the owner stops. A loopback address
    (the control-plane pods' own services, ``localhost.:8080``) is plaintext whatever the
    server name, as in Linkerd (``NoClientTls::Loopback``): the service next to the proxy
    serves no TLS, and traffic on the loopback never leaves the pod.
    """
    host, port = split_host_port(addr)
    if is_loopback_host(host):
        server_name = None
    config = Configuration(
        _keepalive_time=KEEPALIVE_INTERVAL,
        _keepalive_timeout=KEEPALIVE_TIMEOUT,
        ssl_target_name_override=server_name,
    )
    if server_name is None:
        return Channel(host, port, config=config)
    if not trust_anchors_pem:
        raise ValueError(f"TLS to {server_name} needs trust anchors")
    if callable(credentials):
        context = client_context(None, trust_anchors_pem, alpn_protocols=("h2",))
        return _PresentingChannel(
            host, port, context=context, config=config, credentials=credentials
        )
    context = client_context(credentials, trust_anchors_pem, alpn_protocols=("h2",))
    return Channel(host, port, ssl=context, config=config)
