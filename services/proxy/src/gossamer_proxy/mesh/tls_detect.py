"""Recognise a TLS ClientHello in the first bytes of a connection and read its SNI and ALPN.

The inbound proxy peeks at each accepted connection (linkerd-wire.md §9 inbound step 2):
a ClientHello whose SNI is the proxy's own identity is terminated as mesh mTLS; a ClientHello
for another name is passed through untouched (``tls="opaque"``); anything else is plaintext.
:func:`detect_client_hello` takes the bytes peeked so far and answers one of:

* :class:`NeedMore` — the bytes are a valid prefix of a ClientHello; peek again with more;
* :class:`NotTls` — not a TLS handshake (or a malformed one), with the reason;
* :class:`ClientHello` — complete: the SNI host name (if any) and the offered ALPN protocols.

Records may fragment the handshake message; they are reassembled. Nothing is consumed: the
caller keeps the bytes and hands them to the TLS stack or the forwarder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MAX_CLIENT_HELLO",
    "MAX_SERVER_NAME_LENGTH",
    "ClientHello",
    "NeedMore",
    "NotTls",
    "detect_client_hello",
    "is_valid_server_name",
]

_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_EXT_SERVER_NAME = 0x0000
_EXT_ALPN = 0x0010
_RECORD_HEADER = 5
MAX_CLIENT_HELLO = 64 * 1024
"""A ClientHello larger than this is refused as not-TLS rather than buffered further."""
MAX_SERVER_NAME_LENGTH = 253
"""A DNS name is at most 253 characters (a ClientHello's SNI may claim up to 64 KiB)."""
#: An SNI host name: dot-separated labels of 1-63 letters, digits, ``-`` or ``_``.
_SERVER_NAME = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*", re.IGNORECASE)


def is_valid_server_name(name: str) -> bool:
    """Whether an SNI is a host name: at most 253 characters of LDH (and ``_``) labels.
    Anything else is hostile or broken, and routes nowhere and labels nothing."""
    return len(name) <= MAX_SERVER_NAME_LENGTH and _SERVER_NAME.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class NeedMore:
    """Peek again: at least this many bytes in total are needed to decide."""

    at_least: int


@dataclass(frozen=True, slots=True)
class NotTls:
    reason: str


@dataclass(frozen=True, slots=True)
class ClientHello:
    server_name: str | None
    alpn_protocols: tuple[str, ...]


Detection = NeedMore | NotTls | ClientHello


class _MalformedError(Exception):
    pass


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, size: int) -> bytes:
        if self._pos + size > len(self._data):
            raise _MalformedError(f"field of {size} bytes runs past the end of the ClientHello")
        chunk = self._data[self._pos : self._pos + size]
        self._pos += size
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(int.from_bytes(self.take(length_bytes), "big"))

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos


def _handshake_bytes(data: bytes) -> tuple[bytes, int] | Detection:
    """Concatenate handshake record payloads until one whole handshake message is present."""
    payload = bytearray()
    pos = 0
    while True:
        if len(data) < pos + _RECORD_HEADER:
            return NeedMore(pos + _RECORD_HEADER)
        if data[pos] != _HANDSHAKE:
            if pos == 0:
                return NotTls("first byte is not a TLS handshake record")
            return NotTls("ClientHello interrupted by a non-handshake record")
        if data[pos + 1] != 0x03:
            return NotTls("record version is not TLS")
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if length == 0 or length > 16384 + 2048:
            return NotTls(f"invalid TLS record length {length}")
        end = pos + _RECORD_HEADER + length
        if len(data) < end:
            return NeedMore(end)
        payload += data[pos + _RECORD_HEADER : end]
        pos = end
        if len(payload) >= 4:
            if payload[0] != _CLIENT_HELLO:
                return NotTls("first handshake message is not a ClientHello")
            body_len = int.from_bytes(payload[1:4], "big")
            if body_len + 4 > MAX_CLIENT_HELLO:
                return NotTls(f"ClientHello of {body_len} bytes is too large")
            if len(payload) >= body_len + 4:
                return bytes(payload[4 : 4 + body_len]), pos


def _parse_extensions(reader: _Reader) -> ClientHello:
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    if reader.remaining == 0:
        return ClientHello(None, ())
    extensions = _Reader(reader.vector(2))
    while extensions.remaining:
        kind = extensions.u16()
        body = _Reader(extensions.vector(2))
        if kind == _EXT_SERVER_NAME:
            names = _Reader(body.vector(2))
            while names.remaining:
                name_type = names.u8()
                name = names.vector(2)
                if name_type == 0:
                    try:
                        server_name = name.decode("ascii").lower().rstrip(".")
                    except UnicodeDecodeError:
                        raise _MalformedError("SNI host name is not ASCII") from None
        elif kind == _EXT_ALPN:
            protocols = _Reader(body.vector(2))
            found = []
            while protocols.remaining:
                found.append(protocols.vector(1).decode("ascii", "replace"))
            alpn = tuple(found)
    return ClientHello(server_name, alpn)


def detect_client_hello(data: bytes) -> Detection:
    """Classify the first bytes of a connection (see the module docstring)."""
    if not data:
        return NeedMore(1)
    framed = _handshake_bytes(data)
    if not isinstance(framed, tuple):
        return framed
    body, _ = framed
    reader = _Reader(body)
    try:
        reader.take(2)  # legacy_version
        reader.take(32)  # random
        reader.vector(1)  # legacy_session_id
        reader.vector(2)  # cipher_suites
        reader.vector(1)  # legacy_compression_methods
        return _parse_extensions(reader)
    except _MalformedError as exc:
        return NotTls(f"malformed ClientHello: {exc}")
