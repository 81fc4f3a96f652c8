"""Transport header framing: encoding, incremental decoding and malformed input."""

from __future__ import annotations

import struct

import pytest
from gossamer_api.proxy import transport_header_pb2
from gossamer_api.transport_header import (
    PREFACE,
    BadPrefaceError,
    HeaderTooLargeError,
    InvalidHeaderError,
    SessionProtocol,
    TransportHeader,
    TransportHeaderDecoder,
    TruncatedHeaderError,
    decode_transport_header,
    encode_transport_header,
)


def frame(body: bytes) -> bytes:
    return PREFACE + struct.pack(">I", len(body)) + body


def test_preface_is_23_bytes() -> None:
    assert len(PREFACE) == 23
    assert PREFACE == b"transport.l5d.io/v1\r\n\r\n"


def test_encoding_layout() -> None:
    header = TransportHeader(port=8080, name="", session_protocol=SessionProtocol.HTTP2)
    data = encode_transport_header(header)
    assert data.startswith(PREFACE)
    (length,) = struct.unpack(">I", data[23:27])
    assert length == len(data) - 27
    # port = 1 VARINT 8080; session_protocol = 3 LEN { http2 = 2 LEN {} }
    assert data[27:] == bytes([0x08, 0x90, 0x3F, 0x1A, 0x02, 0x12, 0x00])


@pytest.mark.parametrize(
    "header",
    [
        TransportHeader(port=80),
        TransportHeader(port=65535, name="web.emojivoto.svc.cluster.local"),
        TransportHeader(port=8080, session_protocol=SessionProtocol.HTTP1),
        TransportHeader(port=1, name="gw", session_protocol=SessionProtocol.HTTP2),
    ],
)
def test_round_trip_keeps_trailing_application_bytes(header: TransportHeader) -> None:
    data = encode_transport_header(header) + b"GET / HTTP/1.1\r\n"
    decoded = decode_transport_header(data)
    assert decoded.header == header
    assert decoded.remainder == b"GET / HTTP/1.1\r\n"


def test_decoder_accepts_every_split_point() -> None:
    header = TransportHeader(port=9090, name="x.y", session_protocol=SessionProtocol.HTTP1)
    data = encode_transport_header(header) + b"payload"
    for split in range(len(data) + 1):
        decoder = TransportHeaderDecoder()
        result = decoder.receive_data(data[:split])
        # Once the header is complete, later reads are application data for the caller.
        rest = data[split:]
        if result is None:
            result, rest = decoder.receive_data(rest), b""
        assert result is not None, split
        assert result.header == header
        assert result.remainder + rest == b"payload"
        decoder.receive_eof()  # complete: EOF is fine


def test_decoder_byte_by_byte() -> None:
    data = encode_transport_header(TransportHeader(port=4143))
    decoder = TransportHeaderDecoder()
    results = [decoder.receive_data(data[i : i + 1]) for i in range(len(data))]
    assert results[:-1] == [None] * (len(data) - 1)
    final = results[-1]
    assert final is not None
    assert final.header.port == 4143
    assert final.remainder == b""
    assert decoder.done


def test_bad_preface_rejected_as_soon_as_it_diverges() -> None:
    decoder = TransportHeaderDecoder()
    assert decoder.receive_data(b"transport") is None
    with pytest.raises(BadPrefaceError, match="expected transport header preface"):
        decoder.receive_data(b".l5d.io/v2")
    # Nothing the peer sent is dropped, and the decoder stays failed.
    assert decoder.buffered == b"transport.l5d.io/v2"
    with pytest.raises(BadPrefaceError):
        decoder.receive_data(b"more")


def test_plain_http_is_a_bad_preface() -> None:
    with pytest.raises(BadPrefaceError, match="GET / HTTP"):
        decode_transport_header(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def test_huge_length_rejected_before_buffering_body() -> None:
    decoder = TransportHeaderDecoder()
    with pytest.raises(HeaderTooLargeError, match="length 4294967295 exceeds the limit of 65536"):
        decoder.receive_data(PREFACE + b"\xff\xff\xff\xff")


def test_custom_limit() -> None:
    data = encode_transport_header(TransportHeader(port=80, name="a" * 100))
    with pytest.raises(HeaderTooLargeError):
        decode_transport_header(data, max_header_size=50)
    assert decode_transport_header(data, max_header_size=200).header.name == "a" * 100


@pytest.mark.parametrize("cut", [0, 5, 23, 25, 27, 28])
def test_truncated_stream(cut: int) -> None:
    data = encode_transport_header(TransportHeader(port=8080, name="abc"))
    decoder = TransportHeaderDecoder()
    assert decoder.receive_data(data[:cut]) is None
    with pytest.raises(TruncatedHeaderError, match=f"closed after {cut} bytes"):
        decoder.receive_eof()
    with pytest.raises(TruncatedHeaderError):
        decode_transport_header(data[:cut])


def test_garbage_protobuf_rejected() -> None:
    with pytest.raises(InvalidHeaderError, match="not a valid protobuf"):
        decode_transport_header(frame(b"\x0a\xff"))


def test_invalid_utf8_name_rejected() -> None:
    with pytest.raises(InvalidHeaderError):
        decode_transport_header(frame(b"\x08\x50\x12\x02\xff\xfe"))


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_bad_port_rejected(port: int) -> None:
    body = transport_header_pb2.Header(port=port).SerializeToString()
    with pytest.raises(InvalidHeaderError, match=f"port must be in 1..65535, got {port}"):
        decode_transport_header(frame(body))


def test_empty_header_has_no_port() -> None:
    with pytest.raises(InvalidHeaderError):
        decode_transport_header(frame(b""))


def test_unknown_session_protocol_kind_is_treated_as_opaque() -> None:
    # session_protocol = 3 { field 7 (unknown to us) = {} }
    body = b"\x08\x50" + b"\x1a\x02\x3a\x00"
    assert decode_transport_header(frame(body)).header.session_protocol is None


def test_encoder_refuses_invalid_port() -> None:
    with pytest.raises(ValueError, match=r"port must be in 1\.\.65535"):
        TransportHeader(port=0)
    with pytest.raises(TypeError):
        TransportHeader(port=True)


def test_feeding_after_completion_is_a_caller_bug() -> None:
    decoder = TransportHeaderDecoder()
    assert decoder.receive_data(encode_transport_header(TransportHeader(port=80))) is not None
    with pytest.raises(RuntimeError, match="already decoded"):
        decoder.receive_data(b"x")
