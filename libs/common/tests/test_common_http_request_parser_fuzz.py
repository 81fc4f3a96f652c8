"""Regressions found by fuzzing the admin request parser (``make fuzz``, target admin_parser).

Chunk extensions and trailer fields once grew the buffer without bound, and a Content-Length
of non-ASCII digits (``²``, which ``str.isdigit`` accepts) raised ValueError, not BadRequest.
"""

from __future__ import annotations

import pytest
from gossamer_common.http_request_parser import BadRequest, RequestParser


@pytest.mark.parametrize("digit", [b"\xb2", b"\xb3", b"\xb9", b"1\xb2"])
def test_non_ascii_digit_in_content_length_is_a_bad_request(digit: bytes) -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + digit + b"\r\n\r\nxx")
    with pytest.raises(BadRequest) as refused:
        parser.next_request()
    assert refused.value.status == 400


def test_chunk_extensions_do_not_multiply_what_the_parser_buffers() -> None:
    max_body = 1024
    parser = RequestParser(max_header_bytes=4096, max_body_bytes=max_body)
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    one_byte_chunk = b"1;" + b"e" * 1000 + b"\r\nx\r\n"
    for _ in range(max_body // 64):  # 1 KiB of body, ~1 MiB on the wire, in 64-chunk reads
        parser.feed(one_byte_chunk * 64)
        try:
            assert parser.next_request() is None
        except BadRequest:
            return  # refused before buffering without bound: the fix
    assert parser.buffered <= 4096 + 2 * max_body + 1024


def test_chunked_trailer_section_is_bounded_whatever_the_read_sizes() -> None:
    parser = RequestParser(max_header_bytes=512, max_body_bytes=1024)
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n")
    statuses = []
    for _ in range(64):  # 64 KiB of trailer fields, one short line after another
        parser.feed(b"x-trailer: " + b"v" * 1000 + b"\r\n")
        try:
            assert parser.next_request() is None
        except BadRequest as refused:
            statuses.append(refused.status)
            break
    assert statuses == [431]
    assert parser.buffered <= 512 + 2 * 1024 + 1024
