"""Authorization decisions as Linkerd's inbound policy metrics (linkerd-wire.md §8).

``inbound_http_authz_allow_total``, ``inbound_http_authz_deny_total``,
``inbound_http_route_not_found_total``, ``inbound_tcp_authz_allow_total`` and
``inbound_tcp_authz_deny_total``, labelled with the server (``srv_*``), the route
(``route_*``, HTTP only), the authorization that allowed it (``authz_*``, allows only), the
target address and the client's TLS state (:mod:`.tls_labels`); and
``inbound_http_local_ratelimit_total`` for requests a local rate limit refused, labelled
with the server, the rate-limit policy (``ratelimit_group/kind/name``) and which of its
limits refused (``ratelimit_scope``: ``total``, ``identity`` or ``override``).
"""

from __future__ import annotations

import functools

from gossamer_common.metrics import Counter, Family, Registry

from gossamer_proxy.mesh.authz import Decision, MetaLabels, Verdict
from gossamer_proxy.mesh.ratelimit import RateLimitRefusal
from gossamer_proxy.mesh.tls_labels import inbound_tls_labels

__all__ = ["AuthzMetrics"]

_SRV = ("srv_group", "srv_kind", "srv_name", "srv_port")
_ROUTE = ("route_group", "route_kind", "route_name")
_AUTHZ = ("authz_group", "authz_kind", "authz_name")
_TARGET = ("target_addr", "tls", "no_tls_reason", "client_id")
_RATELIMIT = ("ratelimit_group", "ratelimit_kind", "ratelimit_name", "ratelimit_scope")


@functools.lru_cache(maxsize=1024)  # pure, asked per request; client identities recur
def _tls_values(tls: bool, client_id: str | None) -> tuple[str, str, str]:
    labels = inbound_tls_labels(tls=tls, client_id=client_id)
    return labels["tls"], labels.get("no_tls_reason", ""), labels.get("client_id", "")


class AuthzMetrics:
    def __init__(self, registry: Registry) -> None:
        self.http_allow: Family[Counter] = registry.counter_family(
            "inbound_http_authz_allow_total",
            "HTTP requests allowed by inbound policy.",
            (*_SRV, *_ROUTE, *_AUTHZ, *_TARGET),
        )
        self.http_deny: Family[Counter] = registry.counter_family(
            "inbound_http_authz_deny_total",
            "HTTP requests denied by inbound policy (403).",
            (*_SRV, *_ROUTE, *_TARGET),
        )
        self.http_route_not_found: Family[Counter] = registry.counter_family(
            "inbound_http_route_not_found_total",
            "HTTP requests that matched no inbound route (404).",
            (*_SRV, *_TARGET),
        )
        self.tcp_allow: Family[Counter] = registry.counter_family(
            "inbound_tcp_authz_allow_total",
            "TCP connections allowed by inbound policy.",
            (*_SRV, *_AUTHZ, *_TARGET),
        )
        self.tcp_deny: Family[Counter] = registry.counter_family(
            "inbound_tcp_authz_deny_total",
            "TCP connections refused by inbound policy.",
            (*_SRV, *_TARGET),
        )
        self.http_local_ratelimit: Family[Counter] = registry.counter_family(
            "inbound_http_local_ratelimit_total",
            "HTTP requests refused by a local rate limit (429).",
            (*_SRV, *_RATELIMIT, *_TARGET),
        )

    def record_rate_limited(
        self,
        refusal: RateLimitRefusal,
        server: MetaLabels,
        *,
        port: int,
        target_addr: str,
        tls: bool,
        client_id: str | None,
    ) -> None:
        srv = (server.group, server.kind, server.name, str(port))
        limit = (refusal.meta.group, refusal.meta.kind, refusal.meta.name, refusal.scope)
        target = (target_addr, *_tls_values(tls, client_id))
        self.http_local_ratelimit.labels(*srv, *limit, *target).inc()

    def record(
        self,
        decision: Decision,
        *,
        http: bool,
        port: int,
        target_addr: str,
        tls: bool,
        client_id: str | None,
    ) -> None:
        srv = (decision.server.group, decision.server.kind, decision.server.name, str(port))
        target = (target_addr, *_tls_values(tls, client_id))
        authz = decision.authz
        authz_values = (authz.group, authz.kind, authz.name) if authz else ("", "", "")
        if not http:
            if decision.verdict is Verdict.ALLOW:
                self.tcp_allow.labels(*srv, *authz_values, *target).inc()
            else:
                self.tcp_deny.labels(*srv, *target).inc()
            return
        if decision.verdict is Verdict.ROUTE_NOT_FOUND:
            self.http_route_not_found.labels(*srv, *target).inc()
            return
        route = decision.route
        route_values = (route.group, route.kind, route.name) if route else ("", "", "")
        if decision.verdict is Verdict.ALLOW:
            self.http_allow.labels(*srv, *route_values, *authz_values, *target).inc()
        else:
            self.http_deny.labels(*srv, *route_values, *target).inc()
