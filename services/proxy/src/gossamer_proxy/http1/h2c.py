"""Strip ``Upgrade: h2c`` from HTTP/1 requests (sans-io helper for :mod:`.server`).

Linkerd never lets an h2c upgrade through: it removes ``Upgrade: h2c``, ``HTTP2-Settings``
and their ``Connection`` tokens, and the request goes on as plain HTTP/1.1 (forwarding it
would turn the connection into an opaque tunnel after a 101, out of the proxy's sight).
:func:`~.headers.analyze` removes the fields; this module covers the parser's side.

httptools (llhttp) decides that a request upgrades as soon as it has ``Connection:
upgrade`` and an ``Upgrade`` field, before the proxy has stripped anything, and then skips
the request's body and stops. The server resumes: a request without a body simply continues
with the next one; for a request with a body, a fresh parser is primed with the framing-only
head from :func:`body_only_head` so that it reads the body that follows, then any further
requests, as usual.
"""

from __future__ import annotations

from .headers import MessageInfo

__all__ = ["body_only_head", "has_body"]


def has_body(info: MessageInfo) -> bool:
    """Whether the request declared a body (which llhttp skipped on the upgrade)."""
    return info.chunked or bool(info.content_length)


def body_only_head(info: MessageInfo) -> bytes:
    """A request head carrying only ``info``'s framing, to prime a parser for its body."""
    if info.chunked:
        return b"PUT / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
    return b"PUT / HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % (info.content_length or 0)
