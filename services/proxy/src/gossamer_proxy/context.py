"""Per-listener state shared by every connection a listener accepts."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .config import Endpoint, Http1Limits
from .connect import Connector, Resolver
from .http2.idle_upstreams import IdleUpstreams
from .metrics import ProxyMetrics
from .pool import Pool

if TYPE_CHECKING:
    from .http2.bridge import _H2Upstream
    from .inbound_policy import InboundPolicies
    from .local_identity import LocalIdentity
    from .mesh.authz_metrics import AuthzMetrics
    from .observe import Observers
    from .opaque import SpliceRelay
    from .outbound.discovery import OutboundDiscovery

__all__ = ["ClientConnection", "ListenerContext"]


class ClientConnection(Protocol):
    """What housekeeping needs from an accepted connection."""

    def tick(self, now: float) -> None: ...

    def drain(self) -> None:
        """Finish in-flight work, accept no more, then close."""

    def is_idle(self) -> bool: ...


@dataclass(slots=True)
class ListenerContext:
    direction: str  # "inbound" | "outbound"
    listen: Endpoint
    detect_timeout: float
    opaque_ports: frozenset[int]
    limits: Http1Limits
    pool: Pool
    connector: Connector
    resolver: Resolver
    metrics: ProxyMetrics
    fixed_target: Endpoint | None = None
    ingress_mode: bool = False
    #: Inbound only: targets must be one of these IPs, in canonical form (empty: any).
    allowed_ips: frozenset[str] = frozenset()
    #: Inbound only: the ports the proxy itself listens on; never a forwarding target.
    own_ports: frozenset[int] = frozenset()
    splice: bool = True
    #: The proxy's mesh identity (``None``: identity disabled, plaintext everywhere).
    identity: LocalIdentity | None = None
    #: Inbound only: the policy per port, and where its decisions are counted.
    policies: InboundPolicies | None = None
    authz_metrics: AuthzMetrics | None = None
    #: Inbound only: names a transport header may ask us to forward to (gateway mode).
    gateway_suffixes: tuple[str, ...] = ()
    #: Outbound only: TLS label values for connections to the fixed target.
    outbound_tls: tuple[str, ...] = ()
    #: Outbound only: destination-service discovery and balancing (``None``: forward as is).
    discovery: OutboundDiscovery | None = None
    #: The request observers (access log, tap, ...) compiled for this listener by the
    #: proxy's :class:`~.observe.ObserverHub` (``None``: nobody observes; free per request).
    observers: Observers | None = None
    draining: bool = False
    connections: set[ClientConnection] = field(default_factory=set)
    #: Zero-copy opaque relays in progress (they have no protocol object to drain).
    opaque_relays: set[SpliceRelay] = field(default_factory=set)
    #: Background tasks (upstream connects) kept referenced until done.
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: HTTP/2 upstream connections closed client connections left, for the next ones.
    h2_idle: IdleUpstreams[_H2Upstream] = field(default_factory=IdleUpstreams)

    @property
    def inbound(self) -> bool:
        return self.direction == "inbound"

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run connection set-up work (connects) in a task the listener keeps referenced."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task
