"""Whether a connection can stay half-open once its peer has sent everything.

Over plain TCP it can: the peer shut down its sending side (FIN) and still reads, so the
proxy may answer, and a protocol's ``eof_received`` returns True to keep the transport open.

Over TLS it cannot. asyncio's and uvloop's SSL transports close themselves once the peer's
``close_notify`` arrives, whatever ``eof_received`` returns (True only earns the warning
"returning true from eof_received() has no effect when using ssl"), and drop anything
written after it. A protocol on a TLS transport therefore takes the peer's EOF as the end of
the connection: it passes on what the peer sent, and the EOF itself, where that still goes
somewhere; gives up what can no longer be answered; and returns False.
"""

from __future__ import annotations

import asyncio

__all__ = ["can_stay_half_open"]


def can_stay_half_open(transport: asyncio.BaseTransport | None) -> bool:
    """True for a plain transport; False for TLS (and for none at all)."""
    return transport is not None and transport.get_extra_info("ssl_object") is None
