"""HTTP/1 header rules for a proxy hop (sans-io).

A proxy must not forward hop-by-hop headers (RFC 9110 §7.6.1): the fixed set below plus any
field named in ``Connection``. It re-frames bodies itself (``content-length`` kept, chunked
re-chunked), keeps ``Upgrade``/``Connection: upgrade`` only on upgrade requests, strips the
mesh-internal ``l5d-*`` headers that must not reach the next hop, and reads the few fields
that steer forwarding. Everything else is copied byte for byte in the original order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "HOP_BY_HOP",
    "HeaderError",
    "MessageInfo",
    "analyze",
    "chunk",
    "encode_request_head",
    "encode_response_head",
    "filter_trailers",
    "last_chunk",
    "transfer_encoding_line",
]

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",  # re-emitted by the encoder from the parsed framing
        b"l5d-proxy-connection",
        b"http2-settings",  # only meaningful on an h2c upgrade, which is never forwarded
    }
)

#: Fields a trailer section must not carry on to the next hop (RFC 9110 §6.5.1): framing,
#: routing and connection fields. ``l5d-*`` names (the proxy's own) are dropped as well.
TRAILER_FORBIDDEN = HOP_BY_HOP | {b"host", b"content-length", b"content-encoding"}

#: ``l5d-*`` request headers the proxy consumes and never forwards.
L5D_REQUEST_STRIP = frozenset({b"l5d-dst-override", b"l5d-require-id"})


class HeaderError(ValueError):
    """A message's headers are contradictory or malformed (the client gets a 400)."""


@dataclass(slots=True)
class MessageInfo:
    """What the proxy needs to know about one request's or response's header block."""

    content_length: int | None = None
    chunked: bool = False
    #: ``Connection: close`` was sent (or HTTP/1.0 without keep-alive).
    close: bool = False
    keep_alive_token: bool = False
    upgrade: bytes | None = None
    expect_continue: bool = False
    host: bytes | None = None
    #: How many ``Host`` fields the block had (a request with more than one gets a 400).
    host_count: int = 0
    #: Transfer codings applied before ``chunked`` (``gzip`` of ``gzip, chunked``), kept so
    #: that the re-framed message carries the same coding list.
    codings: tuple[bytes, ...] = ()
    #: An ``Upgrade: h2c`` offer was removed (the request goes on as HTTP/1.1).
    h2c_stripped: bool = False
    dst_override: bytes | None = None
    #: ``l5d-require-id``: the identity the outbound connection's server must prove.
    require_id: bytes | None = None
    proxy_connection_close: bool = False
    grpc_status: bytes | None = None
    #: Headers to forward (hop-by-hop and consumed ``l5d-*`` removed).
    forward: Headers = field(default_factory=list)


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip().lower() for token in value.split(b",") if token.strip()]


#: Fields :func:`analyze` reads (its ``elif`` chain tests the most frequent first).
_SPECIAL = frozenset(
    {
        b"content-length",
        b"host",
        b"connection",
        b"transfer-encoding",
        b"upgrade",
        b"l5d-dst-override",
        b"l5d-require-id",
        b"expect",
        b"l5d-proxy-connection",
        b"grpc-status",
    }
)


class _FieldRules:
    """For one ``strip`` set: the names to drop, and every name :func:`analyze` looks at.

    ``watched`` lets an ordinary field (most of them) pass with one set lookup.
    """

    __slots__ = ("drop", "watched")

    def __init__(self, strip: frozenset[bytes]) -> None:
        self.drop = HOP_BY_HOP | strip
        self.watched = self.drop | _SPECIAL


_NO_STRIP: frozenset[bytes] = frozenset()
_RULES: dict[frozenset[bytes], _FieldRules] = {_NO_STRIP: _FieldRules(_NO_STRIP)}


def analyze(headers: Headers, *, strip: frozenset[bytes] = _NO_STRIP) -> MessageInfo:
    """Read the framing and steering fields of a header block and pick those to forward.

    Raises :class:`HeaderError` for framing that a proxy cannot forward safely: several
    differing ``content-length`` values, an invalid length, or a ``transfer-encoding`` whose
    final coding is not ``chunked`` (request smuggling defences, RFC 9112 §6.3).
    """
    rules = _RULES.get(strip)
    if rules is None:
        rules = _RULES[strip] = _FieldRules(strip)
    watched = rules.watched
    info = MessageInfo()
    forward = info.forward
    connection_named: set[bytes] | None = None
    for name, value in headers:
        lname = name.lower()
        if lname not in watched:
            forward.append((name, value))  # the usual field: neither read nor dropped
            continue
        if lname == b"content-length":
            text = value.strip()
            if not text.isdigit():
                raise HeaderError(f"invalid content-length {value!r}")
            length = int(text)
            if info.content_length is not None and info.content_length != length:
                raise HeaderError("conflicting content-length values")
            info.content_length = length
        elif lname == b"host":
            info.host_count += 1
            if info.host is None:
                info.host = value.strip()
        elif lname == b"connection":
            if value == b"keep-alive":  # the usual value: no token list to build
                info.keep_alive_token = True
                continue  # (hop-by-hop: never forwarded)
            for token in _tokens(value):
                if token == b"close":
                    info.close = True
                elif token == b"keep-alive":
                    info.keep_alive_token = True
                elif token != b"upgrade":
                    if connection_named is None:
                        connection_named = set()
                    connection_named.add(token)
        elif lname == b"transfer-encoding":
            # Several fields form one list, in order (RFC 9110 §5.3); checked below.
            info.codings += tuple(_tokens(value))
        elif lname == b"upgrade":
            offered = [p.strip() for p in value.split(b",") if p.strip()]
            kept = [p for p in offered if p.lower() != b"h2c"]
            if len(kept) != len(offered):
                # h2c is never tunnelled: the request goes on as HTTP/1.1 (as Linkerd).
                info.h2c_stripped = True
            info.upgrade = b", ".join(kept) if kept else None
        elif lname == b"l5d-dst-override":
            info.dst_override = value.strip()
        elif lname == b"l5d-require-id":
            info.require_id = value.strip() or None  # empty: nothing required
        elif lname == b"expect":
            info.expect_continue = value.strip().lower() == b"100-continue"
        elif lname == b"l5d-proxy-connection":
            info.proxy_connection_close = b"close" in _tokens(value)
        elif lname == b"grpc-status":
            info.grpc_status = value.strip()
        else:
            continue  # another hop-by-hop or stripped field: dropped, nothing to read
        if lname not in rules.drop:
            forward.append((name, value))
    if info.codings:
        # chunked must be the final coding, applied once (RFC 9112 §6.1, §6.3).
        if info.codings[-1] != b"chunked":
            raise HeaderError(f"unsupported transfer-encoding {b', '.join(info.codings)!r}")
        info.codings = info.codings[:-1]
        if b"chunked" in info.codings:
            raise HeaderError("chunked transfer coding applied more than once")
        info.chunked = True
        # RFC 9112 §6.3: transfer-encoding overrides content-length; never forward both.
        info.content_length = None
    if connection_named:
        # Fields named in Connection are hop-by-hop too (rare, so filtered afterwards).
        info.forward = [(n, v) for n, v in forward if n.lower() not in connection_named]
    return info


def encode_request_head(
    method: bytes,
    target: bytes,
    info: MessageInfo,
    *,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> bytes:
    """Serialize the request head sent upstream (always HTTP/1.1, keep-alive by default)."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in info.forward:
        parts += (name, b": ", value, b"\r\n")
    for name, value in extra:
        parts += (name, b": ", value, b"\r\n")
    if info.chunked:
        parts.append(transfer_encoding_line(info))
    elif info.content_length is not None:
        parts += (b"content-length: ", str(info.content_length).encode(), b"\r\n")
    if info.upgrade is not None:
        parts += (b"connection: upgrade\r\nupgrade: ", info.upgrade, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


_REASONLESS = b""


def encode_response_head(
    status: int,
    reason: bytes,
    info: MessageInfo,
    *,
    framing: bytes,
    close: bool,
) -> bytes:
    """Serialize the response head sent to the client.

    ``framing`` is the exact framing header line(s) chosen by the caller (``content-length``,
    ``transfer-encoding: chunked`` or nothing for close-delimited and bodiless responses).
    """
    parts = [b"HTTP/1.1 %d " % status, reason or _REASONLESS, b"\r\n"]
    for name, value in info.forward:
        parts += (name, b": ", value, b"\r\n")
    parts.append(framing)
    if status == 101 and info.upgrade is not None:
        parts += (b"connection: upgrade\r\nupgrade: ", info.upgrade, b"\r\n")
    elif close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def transfer_encoding_line(info: MessageInfo) -> bytes:
    """The ``transfer-encoding`` line for a chunked message, with its other codings kept."""
    if not info.codings:
        return b"transfer-encoding: chunked\r\n"
    return b"transfer-encoding: " + b", ".join((*info.codings, b"chunked")) + b"\r\n"


def filter_trailers(trailers: Headers) -> Headers:
    """``trailers`` without the fields a trailer section must not pass on.

    Hop-by-hop, framing and routing names (:data:`TRAILER_FORBIDDEN`) and every ``l5d-*``
    name: the proxy owns those (``l5d-client-id`` above all) and never reads them from a
    trailer, so one arriving there is a forgery.
    """
    kept = [
        (name, value)
        for name, value in trailers
        if (lname := name.lower()) not in TRAILER_FORBIDDEN and not lname.startswith(b"l5d-")
    ]
    return kept if len(kept) != len(trailers) else trailers


def chunk(data: bytes) -> list[bytes]:
    """Frame ``data`` as one chunk of a chunked body (for ``writelines``)."""
    return [b"%x\r\n" % len(data), data, b"\r\n"]


def last_chunk(trailers: Headers) -> bytes:
    """The terminating zero-size chunk, carrying ``trailers`` (filtered) if any."""
    trailers = filter_trailers(trailers)
    if not trailers:
        return b"0\r\n\r\n"
    parts = [b"0\r\n"]
    for name, value in trailers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
