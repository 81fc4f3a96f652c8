"""Protocol detection on the first bytes of a connection (sans-io).

Linkerd decides per connection from at most 1024 bytes: the HTTP/2 client preface means h2,
a well-formed HTTP/1 request line means HTTP/1, anything else is opaque TCP. When the client
has not said enough yet the answer is "need more"; the caller then reads again or, when the
detect timeout fires, treats the connection as opaque (server-speaks-first protocols).
"""

from __future__ import annotations

import enum
import re

__all__ = ["DETECT_BUFFER_LIMIT", "H2_PREFACE", "Protocol", "detect"]

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Linkerd reads at most this much before it gives up on HTTP and goes opaque.
DETECT_BUFFER_LIMIT = 1024


class Protocol(enum.Enum):
    HTTP1 = "http/1"
    HTTP2 = "h2"
    OPAQUE = "opaque"


_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
# METHOD SP request-target SP HTTP/1.x, the request-target being visible ASCII.
_REQUEST_LINE = re.compile(rb"[" + _TCHAR + rb"]+ [\x21-\x7e]+ HTTP/1\.[01]\r?\n")
# What a request line can look like before its end has arrived.
_REQUEST_LINE_PREFIX = re.compile(
    rb"["
    + _TCHAR
    + rb"]+(?: (?:[\x21-\x7e]+(?: (?:H(?:T(?:T(?:P(?:/(?:1(?:\.[01]?\r?)?)?)?)?)?)?)?)?)?)?"
)

# A method of plausible length, a space, and a request target filling the window.
_LONG_TARGET = re.compile(rb"[" + _TCHAR + rb"]{1,24} [\x21-\x7e]+")


def detect(data: bytes, *, eof: bool = False) -> Protocol | None:
    """Classify the connection from the bytes received so far.

    Returns ``None`` when more bytes could still change the answer. ``eof`` says the
    client has finished sending; then the answer is always definite.
    """
    if data.startswith(H2_PREFACE):
        return Protocol.HTTP2
    if len(data) < len(H2_PREFACE) and H2_PREFACE.startswith(data):
        return Protocol.OPAQUE if eof else None
    window = data[:DETECT_BUFFER_LIMIT]
    if _REQUEST_LINE.match(window):
        return Protocol.HTTP1
    if b"\n" in window:
        return Protocol.OPAQUE
    prefix = _REQUEST_LINE_PREFIX.match(window)
    if prefix is not None and prefix.end() == len(window):
        # Still a plausible request line. Past the detection window it is a request with
        # a very long target: HTTP/1, so the size limit answers it (431) instead of the
        # bytes slipping through as opaque TCP. That holds whether or not the client has
        # half-closed since: EOF only settles what more bytes could still have changed.
        if len(window) < DETECT_BUFFER_LIMIT:
            return Protocol.OPAQUE if eof else None
        return Protocol.HTTP1 if _LONG_TARGET.fullmatch(window) else Protocol.OPAQUE
    return Protocol.OPAQUE
