"""When a request whose connect failed may be sent to another endpoint (sans-io).

A connection that could not be established carried no byte of the request, so the upstream
cannot have acted on it: picking another endpoint is always safe, whatever the method or
body, and needs no retry budget. This is what keeps a rolling update free of errors when
an endpoint goes away between the balancer's pick and the connect (Linkerd never sends a
request to an endpoint it has no connection to, so such a failure never reaches its
clients either).

Only connect failures qualify: refused, timed out, or failed (reset, TLS handshake error).
A server identity mismatch does not: it means the mesh's view of that address is wrong
(or an attacker sits there), and it must surface as the 502 it is. Failures after bytes
were written are left to the route's retry policy.
"""

from __future__ import annotations

from typing import Final

from ..errors import ProxyErrorKind

__all__ = ["MAX_CONNECT_ATTEMPTS", "may_redispatch"]

#: Connect attempts per dispatch of a request, the first included.
MAX_CONNECT_ATTEMPTS: Final = 3

_CONNECT_FAILURES: Final = frozenset(
    {
        ProxyErrorKind.CONNECT_REFUSED,
        ProxyErrorKind.CONNECT_TIMEOUT,
        ProxyErrorKind.CONNECT_FAILED,
    }
)


def may_redispatch(kind: ProxyErrorKind, attempts: int) -> bool:
    """Whether to pick again after the ``attempts``-th connect failed with ``kind``."""
    return kind in _CONNECT_FAILURES and attempts < MAX_CONNECT_ATTEMPTS
