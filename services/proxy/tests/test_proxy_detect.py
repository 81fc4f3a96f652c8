"""Protocol detection on the first bytes of a connection."""

from __future__ import annotations

import pytest
from gossamer_proxy.detect import DETECT_BUFFER_LIMIT, H2_PREFACE, Protocol, detect
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /upload?x=1 HTTP/1.0\r\n",
        b"OPTIONS * HTTP/1.1\n",
        b"CONNECT example.com:443 HTTP/1.1\r\n",
        b"PROPFIND /dav HTTP/1.1\r\n",
    ],
)
def test_http1_request_lines_are_http1(data: bytes) -> None:
    assert detect(data) is Protocol.HTTP1


def test_h2_preface_is_http2() -> None:
    assert detect(H2_PREFACE) is Protocol.HTTP2
    assert detect(H2_PREFACE + b"\x00\x00\x00\x04") is Protocol.HTTP2


@pytest.mark.parametrize("cut", [1, 5, 10, len(H2_PREFACE) - 1])
def test_partial_preface_needs_more(cut: int) -> None:
    assert detect(H2_PREFACE[:cut]) is None


@pytest.mark.parametrize("data", [b"GET", b"GET /path", b"GET /path HTTP/1.", b"GET / HTTP/1.1\r"])
def test_partial_request_line_needs_more(data: bytes) -> None:
    assert detect(data) is None


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # TLS ClientHello
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",  # postgres SSLRequest
        b"GET / HTTP/2.0\r\n",  # not an HTTP/1 version
        b"GET  / HTTP/1.1\r\n",  # double space
        b"hello world\n",
        b"*1\r\n$4\r\nPING\r\n",  # redis
    ],
)
def test_other_bytes_are_opaque(data: bytes) -> None:
    assert detect(data) is Protocol.OPAQUE


def test_eof_forces_a_decision() -> None:
    assert detect(b"", eof=True) is Protocol.OPAQUE
    assert detect(b"GET /x", eof=True) is Protocol.OPAQUE
    assert detect(b"PRI * HTTP", eof=True) is Protocol.OPAQUE


def test_silent_client_needs_more() -> None:
    # A server-speaks-first protocol: nothing arrives, the caller's detect timeout decides.
    assert detect(b"") is None


def test_overlong_request_target_is_http1_so_limits_apply() -> None:
    data = b"GET /" + b"a" * DETECT_BUFFER_LIMIT
    assert detect(data) is Protocol.HTTP1


def test_overlong_request_target_stays_http1_when_the_client_half_closes() -> None:
    # Found by fuzzing (fuzz/targets/client_hello.py): with EOF the same bytes went opaque,
    # so a client could slip an over-long request past the 431 by half-closing.
    data = b"POST /" + b"a" * DETECT_BUFFER_LIMIT
    assert detect(data) is Protocol.HTTP1
    assert detect(data, eof=True) is Protocol.HTTP1


@given(st.binary(max_size=1100).map(lambda b: b"GET /" + b))
def test_a_definite_answer_does_not_change_at_eof(data: bytes) -> None:
    answer = detect(data)
    if answer is not None:
        assert detect(data, eof=True) is answer


def test_overlong_garbage_is_opaque() -> None:
    assert detect(b"A" * (DETECT_BUFFER_LIMIT + 10)) is Protocol.OPAQUE
    assert detect(b"\x01" * DETECT_BUFFER_LIMIT) is Protocol.OPAQUE


@given(st.binary(max_size=2048))
def test_detect_never_fails_and_is_definite_at_eof(data: bytes) -> None:
    result = detect(data)
    assert result is None or isinstance(result, Protocol)
    assert isinstance(detect(data, eof=True), Protocol)
    if len(data) >= DETECT_BUFFER_LIMIT:
        assert result is not None
