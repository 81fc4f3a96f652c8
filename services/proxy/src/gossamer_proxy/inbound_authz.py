"""Inbound authorization at the data path's two decision points: connection and request.

An accepted inbound connection resolves its :class:`InboundPeer` once — who the client is
(address, mTLS identity) and which :class:`~.mesh.authz.ServerPolicy` governs the target
port. Opaque connections are decided once (:meth:`InboundPeer.allow_tcp`: refused ⇒ the
connection is closed); HTTP requests one by one (:meth:`InboundPeer.check_http`: denied ⇒
403, no route ⇒ 404), both counted in ``inbound_{tcp,http}_authz_*_total``. Each HTTP
request is decided against the port's policy in force when it arrives, so a policy update
reaches kept-alive connections: a revoked authorization or a new rate limit applies to
their next request, as in Linkerd. An authorized request is then checked against the
Server's local rate limit (refused ⇒ 429, counted in ``inbound_http_local_ratelimit_total``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from .errors import ProxyError, ProxyErrorKind
from .mesh.authz import (
    ClientInfo,
    Decision,
    ServerPolicy,
    Verdict,
    authorize_http,
    authorize_tcp,
)
from .mesh.authz_metrics import AuthzMetrics
from .mesh.request import RequestView

__all__ = ["InboundPeer", "client_ip"]

_log = structlog.get_logger("gossamer.proxy")


def client_ip(peername: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The client's address from ``get_extra_info("peername")`` (unspecified if unknown)."""
    if isinstance(peername, tuple) and peername:
        try:
            return ipaddress.ip_address(str(peername[0]).split("%", 1)[0])
        except ValueError:
            pass
    return ipaddress.IPv4Address(0)


@dataclass(frozen=True, slots=True)
class InboundPeer:
    client: ClientInfo
    policy: ServerPolicy
    port: int
    target_addr: str
    metrics: AuthzMetrics | None
    #: The port's policy in force now (``None``: ``policy`` stays the one in force).
    current: Callable[[int], ServerPolicy] | None = None

    @property
    def client_id(self) -> str | None:
        return self.client.identity

    def allow_tcp(self) -> bool:
        decision = authorize_tcp(self.policy, self.client)
        self._record(decision, http=False)
        if not decision.allowed:
            _log.info(
                "inbound_tcp_unauthorized",
                port=self.port,
                client=str(self.client.ip),
                client_id=self.client.identity,
                server=self.policy.meta.name,
            )
        return decision.allowed

    def check_http(
        self,
        method: bytes,
        target: bytes,
        authority: bytes | None,
        headers: Sequence[tuple[bytes, bytes]],
        now: float,
    ) -> ProxyError | None:
        """``None`` if the request may go on, else the error to answer it with.

        ``now`` is a monotonic clock reading, for the rate limit's buckets.
        """
        policy = self.policy if self.current is None else self.current(self.port)
        view = RequestView.from_target(method, target, authority=authority or b"", headers=headers)
        decision = authorize_http(policy, self.client, view)
        self._record(decision, http=True)
        if decision.verdict is Verdict.ALLOW:
            limiter = policy.rate_limit
            if limiter is None:
                return None
            refusal = limiter.check(self.client.identity, now)
            if refusal is None:
                return None
            if self.metrics is not None:
                self.metrics.record_rate_limited(
                    refusal,
                    decision.server,
                    port=self.port,
                    target_addr=self.target_addr,
                    tls=self.client.tls,
                    client_id=self.client.identity,
                )
            return ProxyError(ProxyErrorKind.RATE_LIMITED, refusal.message)
        if decision.verdict is Verdict.ROUTE_NOT_FOUND:
            return ProxyError(ProxyErrorKind.ROUTE_NOT_FOUND)
        _log.info(
            "inbound_http_unauthorized",
            port=self.port,
            path=view.path,
            client=str(self.client.ip),
            client_id=self.client.identity,
            server=policy.meta.name,
        )
        return ProxyError(ProxyErrorKind.FORBIDDEN)

    def _record(self, decision: Decision, *, http: bool) -> None:
        if self.metrics is None:
            return
        self.metrics.record(
            decision,
            http=http,
            port=self.port,
            target_addr=self.target_addr,
            tls=self.client.tls,
            client_id=self.client.identity,
        )
