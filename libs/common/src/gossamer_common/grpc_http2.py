"""gRPC over HTTP/2, the parts that need no socket: frames, statuses, deadlines, requests.

Shared by the destination's streaming server (which frames each update once,
:class:`gossamer_destination.topics.Change`, and writes the same bytes to every stream; only the
9-byte DATA frame header, which carries the stream id, is built per stream: :func:`data_frames`)
and the unary server of :mod:`gossamer_common.grpc_unary` (identity's Certify).

References: the gRPC HTTP/2 protocol (PROTOCOL-HTTP2.md: length-prefixed messages,
``grpc-timeout``, ``grpc-status``/``grpc-message`` trailers, trailers-only responses) and
RFC 9113 §6.1 (DATA frames).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence

Header = tuple[bytes, bytes]

#: The largest request message a client may send (requests are a path and a token).
MAX_REQUEST_BYTES = 64 * 1024

_DATA = b"\x00"
_NO_FLAGS = b"\x00"


class Status(enum.IntEnum):
    """gRPC status codes (the ones this server answers with)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14


class RequestError(Exception):
    """A request this server refuses, with the status to answer."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def grpc_message(message: bytes) -> bytes:
    """``message`` with gRPC's 5-byte prefix (uncompressed flag, big-endian length)."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def data_frames(
    stream_id: int, data: bytes | memoryview, max_frame: int
) -> list[bytes | memoryview]:
    """``data`` as DATA frames of at most ``max_frame`` bytes: header, payload, header, ..."""
    sid = stream_id.to_bytes(4, "big")
    size = len(data)
    if size <= max_frame:
        return [size.to_bytes(3, "big") + _DATA + _NO_FLAGS + sid, data]
    view = memoryview(data)
    out: list[bytes | memoryview] = []
    for start in range(0, size, max_frame):
        chunk = view[start : start + max_frame]
        out.append(len(chunk).to_bytes(3, "big") + _DATA + _NO_FLAGS + sid)
        out.append(chunk)
    return out


_TIMEOUT = re.compile(rb"^([0-9]{1,8})([HMSmun])$")
_UNIT_SECONDS = {
    b"H": 3600.0,
    b"M": 60.0,
    b"S": 1.0,
    b"m": 1e-3,
    b"u": 1e-6,
    b"n": 1e-9,
}


def parse_timeout(value: bytes) -> float:
    """``grpc-timeout`` (at most 8 digits and a unit) in seconds."""
    match = _TIMEOUT.match(value)
    if match is None:
        raise RequestError(Status.INTERNAL, f"malformed grpc-timeout {value[:20]!r}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _percent_encode(message: str) -> bytes:
    out = bytearray()
    for byte in message.encode("utf-8", "replace"):
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


RESPONSE_HEADERS: Sequence[Header] = (
    (b":status", b"200"),
    (b"content-type", b"application/grpc"),
)


def status_trailers(status: Status, message: str = "") -> list[Header]:
    trailers = [(b"grpc-status", str(int(status)).encode())]
    if message:
        trailers.append((b"grpc-message", _percent_encode(message[:1024])))
    return trailers


def trailers_only(status: Status, message: str = "") -> list[Header]:
    """A response that is nothing but a status: headers and trailers in one HEADERS frame."""
    return [*RESPONSE_HEADERS, *status_trailers(status, message)]


class RequestHead:
    """What the server reads from a request's headers."""

    __slots__ = ("path", "timeout")

    def __init__(self, path: bytes, timeout: float | None) -> None:
        self.path = path
        self.timeout = timeout


def parse_request_head(headers: Sequence[Header]) -> RequestHead:
    """Checks a gRPC request's headers; :class:`RequestError` for one to refuse."""
    method = path = content_type = None
    timeout = None
    for name, value in headers:
        if name == b":method":
            method = value
        elif name == b":path":
            path = value
        elif name == b"content-type":
            content_type = value
        elif name == b"grpc-timeout":
            timeout = parse_timeout(value)
        elif name == b"grpc-encoding" and value != b"identity":
            raise RequestError(Status.UNIMPLEMENTED, f"grpc-encoding {value[:20]!r} not supported")
    if method != b"POST":
        raise RequestError(Status.INTERNAL, "gRPC requests use POST")
    if content_type is None or not (
        content_type == b"application/grpc"
        or content_type.startswith((b"application/grpc+", b"application/grpc;"))
    ):
        raise RequestError(Status.INTERNAL, "content-type is not application/grpc")
    if not path:
        raise RequestError(Status.UNIMPLEMENTED, "no :path")
    return RequestHead(path, timeout)


class RequestBody:
    """Collects a request's DATA and yields its one message (bounded)."""

    __slots__ = ("_buffer", "_limit")

    def __init__(self, limit: int = MAX_REQUEST_BYTES) -> None:
        self._buffer = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> None:
        if len(self._buffer) + len(data) > self._limit + 5:
            raise RequestError(Status.RESOURCE_EXHAUSTED, "request message too large")
        self._buffer += data

    def message(self) -> bytes:
        """The single message of a finished request."""
        buffer = self._buffer
        if len(buffer) < 5:
            raise RequestError(Status.INTERNAL, "request has no message")
        if buffer[0] == 1:
            # Requests with a grpc-encoding other than identity are refused at their headers,
            # so a compressed message here names no encoding: a protocol violation.
            raise RequestError(Status.INTERNAL, "compressed message without grpc-encoding")
        if buffer[0] != 0:
            raise RequestError(Status.INTERNAL, f"invalid message flags {buffer[0]}")
        length = int.from_bytes(buffer[1:5], "big")
        if length > self._limit:
            raise RequestError(Status.RESOURCE_EXHAUSTED, "request message too large")
        if len(buffer) != 5 + length:
            raise RequestError(Status.INTERNAL, "request must be exactly one message")
        return bytes(buffer[5:])
