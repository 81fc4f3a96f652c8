"""The sans-io admin request parser: framing, limits and every rejection path."""

from __future__ import annotations

import pytest
from gossamer_common.http_request_parser import BadRequest, RequestParser


def parse_all(data: bytes, **kw: int) -> list[object]:
    p = RequestParser(**kw)
    p.feed(data)
    out: list[object] = []
    while (req := p.next_request()) is not None:
        out.append(req)
    return out


def test_simple_get_with_query_and_headers() -> None:
    p = RequestParser()
    p.feed(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept-Encoding:  gzip \r\n\r\n")
    req = p.next_request()
    assert req is not None
    assert (req.method, req.path, req.query, req.version) == ("GET", "/metrics", "x=1", (1, 1))
    assert req.header("accept-encoding") == "gzip"
    assert req.keep_alive
    assert p.buffered == 0


def test_incremental_feed_byte_by_byte() -> None:
    data = b"POST /shutdown HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    p = RequestParser()
    for i, b in enumerate(data):
        p.feed(bytes([b]))
        req = p.next_request()
        if i < len(data) - 1:
            assert req is None
    assert req is not None
    assert req.body == b"hello"


def test_pipelined_requests_and_http10_keepalive() -> None:
    reqs = parse_all(
        b"GET /live HTTP/1.0\r\n\r\n"
        b"\r\nGET /ready HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    assert [r.path for r in reqs] == ["/live", "/ready", "/x"]  # type: ignore[attr-defined]
    assert [r.keep_alive for r in reqs] == [False, True, False]  # type: ignore[attr-defined]


def test_chunked_body_with_extension_and_trailer() -> None:
    p = RequestParser()
    p.feed(b"PUT /level HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    p.feed(b"4;ext=1\r\ninfo\r\n")
    assert p.next_request() is None
    p.feed(b"3\r\n,x=\r\n0\r\nX-Trailer: y\r\n\r\nGET")
    req = p.next_request()
    assert req is not None
    assert req.body == b"info,x="
    assert p.buffered == 3


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (b"GARBAGE\r\n\r\n", 400, "malformed request line"),
        (b"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n", 400, "malformed request line"),
        (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "malformed request method"),
        (b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "malformed request target"),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "unsupported HTTP version"),
        (b"GET / FTP/1.0\r\n\r\n", 400, "malformed request line"),
        (b"GET / HTTP/1.1\r\n\r\n", 400, "missing Host"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400, "malformed header"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400, "malformed header"),
        (b"GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n", 400, "invalid character"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", 400, "invalid Content-Length"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            "conflicting",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "both",
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "unsupported"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "chunk"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n",
            400,
            "CRLF",
        ),
    ],
)
def test_malformed_requests_are_rejected(data: bytes, status: int, reason: str) -> None:
    p = RequestParser()
    p.feed(data)
    with pytest.raises(BadRequest, match=reason) as info:
        p.next_request()
    assert info.value.status == status
    # The parser stays failed: no request is ever produced after an error.
    with pytest.raises(BadRequest):
        p.next_request()


def test_header_and_body_limits() -> None:
    p = RequestParser(max_header_bytes=64)
    p.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 100)
    with pytest.raises(BadRequest) as info:
        p.next_request()
    assert info.value.status == 431
    p = RequestParser(max_body_bytes=4)
    p.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
    with pytest.raises(BadRequest) as info:
        p.next_request()
    assert info.value.status == 413
    p = RequestParser(max_body_bytes=4)
    p.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n")
    with pytest.raises(BadRequest) as info:
        p.next_request()
    assert info.value.status == 413


# -- linear, bounded parsing (issue 16) ------------------------------------------------------


def _one_byte_chunks(count: int) -> bytes:
    return (
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"1\r\nx\r\n" * count
        + b"0\r\n\r\n"
    )


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_chunked_parsing_work_is_linear_in_the_input(piece: int) -> None:
    """Work grows with the input, not with its square, however the input is split."""
    scanned = []
    for count in (1_000, 4_000):
        data = _one_byte_chunks(count)
        p = RequestParser()
        requests = []
        for i in range(0, len(data), piece):
            p.feed(data[i : i + piece])
            if (req := p.next_request()) is not None:
                requests.append(req)
        assert [len(r.body) for r in requests] == [count]
        assert p.scanned <= 2 * len(data)
        scanned.append(p.scanned)
    assert scanned[1] <= 4 * scanned[0] + 64  # 4x the input: ~4x the work


@pytest.mark.timeout(60)
def test_half_a_megabyte_of_one_byte_chunks_is_parsed() -> None:
    data = _one_byte_chunks(512 * 1024)
    p = RequestParser()
    got = None
    for i in range(0, len(data), 65536):
        p.feed(data[i : i + 65536])
        got = p.next_request() or got
    assert got is not None
    assert got.body == b"x" * 512 * 1024
    assert p.scanned <= len(data)


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, "request line too long"),
        (b"GET /" + b"a" * 9000, 414, "request line too long"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431, "line too long"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 9000, 431, "line too long"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\n"
            + b"X: "
            + b"a" * 5000
            + b"\r\n" * 1
            + b"Y: "
            + b"b" * 5000
            + b"\r\n"
            + b"Z: "
            + b"c" * 7000
            + b"\r\n\r\n",
            431,
            "header section too large",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: 1\r\n" * 101 + b"\r\n",
            431,
            "too many header fields",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
            "more than one Host",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;"
            + b"e" * 2000
            + b"\r\nx\r\n0\r\n\r\n",
            400,
            "chunk size line too long",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1" + b" " * 2000,
            400,
            "chunk size line too long",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
            + b"X: 1\r\n" * 4000,
            431,
            "trailer section too large",
        ),
    ],
)
def test_every_line_and_section_is_bounded(data: bytes, status: int, reason: str) -> None:
    p = RequestParser()
    p.feed(data)
    with pytest.raises(BadRequest, match=reason) as info:
        p.next_request()
    assert info.value.status == status


def test_body_limit_applies_to_the_decoded_body_across_chunks() -> None:
    p = RequestParser(max_body_bytes=10)
    p.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    p.feed(b"6\r\nabcdef\r\n")
    assert p.next_request() is None
    p.feed(b"6\r\n")
    with pytest.raises(BadRequest, match="exceeds") as info:
        p.next_request()
    assert info.value.status == 413


def test_buffered_reports_a_request_in_progress() -> None:
    p = RequestParser()
    p.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n")
    assert p.next_request() is None
    assert p.buffered > 0
    p.feed(b"\r\n")
    assert p.next_request() is not None
    assert p.buffered == 0
