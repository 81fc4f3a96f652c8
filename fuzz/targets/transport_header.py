"""The transport header decoder (``transport.l5d.io/v1``) and the inbound forward decision.

Drives :class:`gossamer_api.transport_header.TransportHeaderDecoder` the way the inbound
proxy does (:mod:`gossamer_proxy.accept`): chunk by chunk, then EOF, then
:func:`gossamer_proxy.mesh.transport.inbound_forward` on the decoded header.

Contract checked: only :class:`TransportHeaderError` / :class:`TransportError` are raised;
fed in chunks it gives the same header and remainder as fed at once; while incomplete it
buffers less than preface + length prefix + ``max_header_size`` bytes (the documented
cap); a decoded header re-encodes to bytes that decode to the same header.
"""

from __future__ import annotations

from gossamer_api.transport_header import (
    PREFACE,
    SessionProtocol,
    TransportHeader,
    TransportHeaderDecoder,
    TransportHeaderError,
    decode_transport_header,
    encode_transport_header,
)
from gossamer_proxy.mesh.transport import TransportError, inbound_forward

from ..harness import Finding, Target, Unbounded
from ..ops import Choices

LIMITS = (64 * 1024, 0, 1, 16, 64, 300)
SUFFIXES = ((), ("cluster.local",), ("svc.cluster.local", "example.org."), ("",))


def one_input(data: bytes) -> None:
    choices = Choices(data)
    max_size = LIMITS[choices.below(len(LIMITS))]
    suffixes = SUFFIXES[choices.below(len(SUFFIXES))]
    chunk_sizes = [1 + choices.u8() for _ in range(choices.below(8))] or [len(data) + 1]
    stream = choices.rest()
    try:
        whole: object = decode_transport_header(stream, max_header_size=max_size)
    except TransportHeaderError as exc:
        whole = type(exc)
    decoder = TransportHeaderDecoder(max_header_size=max_size)
    cap = len(PREFACE) + 4 + max_size
    pos, turn, result = 0, 0, None
    try:
        while pos < len(stream) and result is None:
            size = chunk_sizes[turn % len(chunk_sizes)]
            turn += 1
            result = decoder.receive_data(stream[pos : pos + size])
            pos += size
            if result is None and len(decoder.buffered) >= cap:
                raise Unbounded(f"{len(decoder.buffered)} bytes buffered, cap {cap}")
        if result is None:
            decoder.receive_eof()
    except TransportHeaderError as exc:
        if whole is not type(exc):
            raise Finding(
                f"chunked decode raised {exc!r}, one-shot gave {whole!r}",
                key=f"chunked decode raised {type(exc).__name__}, one-shot did not",
            ) from exc
        raise
    assert result is not None
    remainder = result.remainder + stream[pos:]
    if isinstance(whole, type) or whole != type(result)(result.header, remainder):
        raise Finding(
            f"chunked decode gave {result!r}, one-shot {whole!r}",
            key="chunked and one-shot decodes differ",
        )
    again = decode_transport_header(encode_transport_header(result.header))
    if again.header != result.header or again.remainder:
        raise Finding(f"re-encoding {result.header!r} decodes to {again!r}")
    forward = inbound_forward(result.header, gateway_suffixes=suffixes)
    if forward.port != result.header.port:
        raise Finding("inbound_forward changed the port")


def seeds() -> list[bytes]:
    headers = [
        TransportHeader(4143),
        TransportHeader(8080, session_protocol=SessionProtocol.HTTP1),
        TransportHeader(443, "web.default.svc.cluster.local", SessionProtocol.HTTP2),
        TransportHeader(65535, "x.example.org"),
    ]
    out = []
    for i, header in enumerate(headers):
        prefix = bytes([0, i % len(SUFFIXES), 3, 1, 7, 200])
        out.append(prefix + encode_transport_header(header) + b"GET / HTTP/1.1\r\n\r\n")
    return out


TARGET = Target(
    name="transport_header",
    one_input=one_input,
    expected=(TransportHeaderError, TransportError),
    seeds=seeds,
    max_len=2048,
    dictionary=(PREFACE, b"\x08\x8f\x20", b"\x12\x0dcluster.local", b"\x1a\x02\x0a\x00"),
)
