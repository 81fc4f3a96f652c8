"""Sans-io framing of the Linkerd transport header (``transport.l5d.io/v1``).

When a client proxy connects to a meshed endpoint's inbound port (4143) with ALPN
``transport.l5d.io/v1``, the first bytes inside the mTLS stream are::

    b"transport.l5d.io/v1\\r\\n\\r\\n"   23-byte ASCII preface
    u32, big-endian                    length of the protobuf that follows
    transport.l5d.io.Header            port, optional gateway name, optional HTTP version

followed directly by the application's bytes. This module turns a
:class:`TransportHeader` into those bytes and parses them back from a byte stream fed in
arbitrary chunks, without doing any I/O itself (the proxy's asyncio protocols feed it).
A peer that sends the wrong preface, an absurd length or an invalid header gets a
:class:`TransportHeaderError` naming the problem; bytes that arrive after the header are
handed back untouched.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # protobuf loads with the first header, not with this module
    from gossamer_api.proxy import transport_header_pb2

ALPN_PROTOCOL = "transport.l5d.io/v1"
PREFACE = b"transport.l5d.io/v1\r\n\r\n"
_LENGTH = struct.Struct(">I")
MAX_PORT = 65535
# A real header is a port, a DNS name (at most 253 bytes) and a tiny sub-message; the
# limit only stops a peer from making us buffer unbounded data before we can refuse it.
DEFAULT_MAX_HEADER_SIZE = 64 * 1024


class TransportHeaderError(ValueError):
    """The peer sent bytes that are not a valid transport header."""


class BadPrefaceError(TransportHeaderError):
    """The stream does not start with ``transport.l5d.io/v1\\r\\n\\r\\n``."""


class HeaderTooLargeError(TransportHeaderError):
    """The declared header length exceeds the decoder's limit."""


class InvalidHeaderError(TransportHeaderError):
    """The header protobuf is malformed or carries an invalid port."""


class TruncatedHeaderError(TransportHeaderError):
    """The stream ended before a complete header arrived."""


class SessionProtocol(enum.Enum):
    """The HTTP version a connection carries, letting the server skip protocol detection."""

    HTTP1 = "http1"
    HTTP2 = "http2"


@dataclass(frozen=True)
class TransportHeader:
    """Where the server proxy should send the connection.

    ``name`` empty means "a port on this pod"; a name asks a gateway to forward to it.
    ``session_protocol`` is ``None`` for opaque traffic.
    """

    port: int
    name: str = ""
    session_protocol: SessionProtocol | None = None

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise TypeError(f"port must be an int, got {self.port!r}")
        if not 1 <= self.port <= MAX_PORT:
            raise ValueError(f"transport header port must be in 1..{MAX_PORT}, got {self.port}")

    def to_proto(self) -> transport_header_pb2.Header:
        from gossamer_api.proxy import transport_header_pb2

        message = transport_header_pb2.Header(port=self.port, name=self.name)
        if self.session_protocol is SessionProtocol.HTTP1:
            message.session_protocol.http1.SetInParent()
        elif self.session_protocol is SessionProtocol.HTTP2:
            message.session_protocol.http2.SetInParent()
        return message

    @classmethod
    def from_proto(cls, message: transport_header_pb2.Header) -> TransportHeader:
        """Validate a decoded ``Header``; raises :class:`InvalidHeaderError` for a bad port.

        A ``session_protocol`` whose kind this version does not know is treated as absent,
        so the connection is handled as opaque rather than refused.
        """
        if not 1 <= message.port <= MAX_PORT:
            raise InvalidHeaderError(
                f"transport header port must be in 1..{MAX_PORT}, got {message.port}"
            )
        protocol: SessionProtocol | None = None
        if message.HasField("session_protocol"):
            kind = message.session_protocol.WhichOneof("kind")
            if kind == "http1":
                protocol = SessionProtocol.HTTP1
            elif kind == "http2":
                protocol = SessionProtocol.HTTP2
        return cls(port=message.port, name=message.name, session_protocol=protocol)


def encode_transport_header(header: TransportHeader) -> bytes:
    """Frame ``header`` as preface + big-endian u32 length + protobuf."""
    body = header.to_proto().SerializeToString(deterministic=True)
    return PREFACE + _LENGTH.pack(len(body)) + body


@dataclass(frozen=True)
class DecodedHeader:
    """A complete header plus the application bytes that arrived with it."""

    header: TransportHeader
    remainder: bytes


class TransportHeaderDecoder:
    """Incrementally parse a transport header from the start of a byte stream.

    Feed every chunk read from the connection to :meth:`receive_data` until it returns a
    :class:`DecodedHeader`; call :meth:`receive_eof` if the stream ends first. After an
    error the decoder stays failed and raises the same error again.
    """

    def __init__(self, *, max_header_size: int = DEFAULT_MAX_HEADER_SIZE) -> None:
        if max_header_size < 0:
            raise ValueError("max_header_size must not be negative")
        self._max_header_size = max_header_size
        self._buffer = bytearray()
        self._result: DecodedHeader | None = None
        self._error: TransportHeaderError | None = None

    @property
    def buffered(self) -> bytes:
        """Bytes received but not yet consumed by a complete header."""
        return bytes(self._buffer)

    @property
    def done(self) -> bool:
        return self._result is not None

    def receive_data(self, data: bytes) -> DecodedHeader | None:
        """Add bytes; return the header once complete, or ``None`` if more are needed."""
        if self._error is not None:
            raise self._error
        if self._result is not None:
            raise RuntimeError("transport header already decoded; the remainder was returned")
        self._buffer += data
        try:
            self._result = self._parse()
        except TransportHeaderError as exc:
            self._error = exc
            raise
        if self._result is not None:
            self._buffer.clear()
        return self._result

    def receive_eof(self) -> None:
        """Note that the stream ended; raises :class:`TruncatedHeaderError` if incomplete."""
        if self._error is not None:
            raise self._error
        if self._result is None:
            self._error = TruncatedHeaderError(
                f"connection closed after {len(self._buffer)} bytes of a transport header"
            )
            raise self._error

    def _parse(self) -> DecodedHeader | None:
        buffer = self._buffer
        seen = bytes(buffer[: len(PREFACE)])
        if not PREFACE.startswith(seen):
            raise BadPrefaceError(f"expected transport header preface {PREFACE!r}, got {seen!r}")
        body_start = len(PREFACE) + _LENGTH.size
        if len(buffer) < body_start:
            return None
        (length,) = _LENGTH.unpack_from(buffer, len(PREFACE))
        if length > self._max_header_size:
            raise HeaderTooLargeError(
                f"transport header length {length} exceeds the limit of "
                f"{self._max_header_size} bytes"
            )
        body_end = body_start + length
        if len(buffer) < body_end:
            return None
        # Loaded on the first header: a proxy that never meets one (plaintext, or mTLS
        # without the transport header) keeps protobuf's runtime out of its memory.
        from google.protobuf.message import DecodeError

        from gossamer_api.proxy import transport_header_pb2

        message = transport_header_pb2.Header()
        try:
            message.ParseFromString(bytes(buffer[body_start:body_end]))
        except DecodeError as exc:
            raise InvalidHeaderError(f"transport header is not a valid protobuf: {exc}") from exc
        header = TransportHeader.from_proto(message)
        return DecodedHeader(header=header, remainder=bytes(buffer[body_end:]))


def decode_transport_header(
    data: bytes, *, max_header_size: int = DEFAULT_MAX_HEADER_SIZE
) -> DecodedHeader:
    """Decode a header from bytes that must hold all of it (e.g. a test or a peeked buffer)."""
    decoder = TransportHeaderDecoder(max_header_size=max_header_size)
    result = decoder.receive_data(data)
    if result is None:
        raise TruncatedHeaderError(f"{len(data)} bytes are not a complete transport header")
    return result
