"""Downgrading an ``l5d-orig-proto`` stream back to HTTP/1 (sans-io).

A Linkerd client proxy that learns from the destination service that an endpoint is meshed
(the ``h2`` protocol hint) upgrades the app's HTTP/1 requests to HTTP/2 and marks each with
``l5d-orig-proto: HTTP/1.1`` (or ``HTTP/1.0``, with ``; absolute-form`` when the request
target was absolute; linkerd-wire.md §9 outbound step 5). The server's inbound proxy removes
the header and sends the request to the app as HTTP/1; the app's HTTP/1 response goes back
over HTTP/2 with ``l5d-orig-proto`` set to the response's HTTP version, which tells the client
proxy the exchange was downgraded. An unknown value is dropped and the stream stays HTTP/2.

This module turns the HTTP/2 request head into the HTTP/1.1 head for the app, and the app's
HTTP/1 response head into the HTTP/2 response head; :mod:`.downgrade` moves the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..http1.headers import HeaderError, MessageInfo, analyze, encode_request_head
from ..mesh.l5d_headers import ORIG_PROTO, OrigProto

__all__ = [
    "DowngradedRequest",
    "downgrade_request",
    "upgraded_response_headers",
]

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class DowngradedRequest:
    """The HTTP/1.1 request head for the app, and how its body is framed."""

    head: bytes
    chunked: bool
    is_head: bool
    has_body: bool


def downgrade_request(
    headers: Headers, orig: OrigProto, *, ended: bool, default_host: bytes
) -> DowngradedRequest:
    """HTTP/2 request headers (pseudo-headers included) → an HTTP/1.1 request head.

    ``ended``: the HTTP/2 request ended with its headers (no body). A body without
    ``content-length`` is sent chunked, as an HTTP/1.1 client sends a body of unknown
    length. Raises :class:`~..http1.headers.HeaderError` for a request HTTP/1 cannot carry
    (no ``:path``, e.g. CONNECT) or a malformed ``content-length``.
    """
    method = path = scheme = authority = b""
    regular: Headers = []
    for name, value in headers:
        if name.startswith(b":"):
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":scheme":
                scheme = value
            elif name == b":authority":
                authority = value
            continue
        if name == ORIG_PROTO:
            continue
        regular.append((name, value))
    if not method or not path:
        raise HeaderError("an HTTP/2 request without :method or :path cannot become HTTP/1")
    info: MessageInfo = analyze(regular)
    if orig.absolute_form and authority and path.startswith(b"/"):
        target = (scheme or b"http") + b"://" + authority + path
    else:
        target = path
    extra: tuple[tuple[bytes, bytes], ...] = ()
    if info.host is None:
        extra = ((b"host", authority or default_host),)
    has_body = not ended
    chunked = has_body and info.content_length is None
    info.chunked = chunked
    head = encode_request_head(method, target, info, extra=extra)
    return DowngradedRequest(
        head=head, chunked=chunked, is_head=method == b"HEAD", has_body=has_body
    )


def upgraded_response_headers(status: int, info: MessageInfo, version: str) -> Headers:
    """The app's HTTP/1 response head as HTTP/2 headers, ``l5d-orig-proto`` echoed.

    Hop-by-hop fields (``connection``, ``transfer-encoding``, ...) are already out of
    ``info.forward``; HTTP/2 wants lower-case names; ``content-length`` is kept.
    """
    headers: Headers = [(b":status", str(status).encode())]
    headers += [(name.lower(), value) for name, value in info.forward]
    if info.content_length is not None:
        headers.append((b"content-length", str(info.content_length).encode()))
    if status >= 200:
        headers.append((ORIG_PROTO, b"HTTP/1.0" if version == "1.0" else b"HTTP/1.1"))
    return headers
