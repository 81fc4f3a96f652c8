"""HTTP/1 header rules: hop-by-hop stripping, framing and smuggling defences."""

from __future__ import annotations

import pytest
from gossamer_proxy.http1.headers import (
    L5D_REQUEST_STRIP,
    HeaderError,
    analyze,
    chunk,
    encode_request_head,
    encode_response_head,
    last_chunk,
)


def test_hop_by_hop_and_connection_named_headers_are_stripped() -> None:
    info = analyze(
        [
            (b"Host", b"svc:80"),
            (b"Connection", b"keep-alive, X-Private"),
            (b"Keep-Alive", b"timeout=5"),
            (b"X-Private", b"secret"),
            (b"Proxy-Connection", b"keep-alive"),
            (b"TE", b"trailers"),
            (b"Trailer", b"x-sum"),
            (b"X-Kept", b"1"),
        ]
    )
    assert info.forward == [(b"Host", b"svc:80"), (b"X-Kept", b"1")]
    assert info.keep_alive_token
    assert info.host == b"svc:80"


def test_original_order_and_case_are_kept() -> None:
    headers = [(b"X-B", b"2"), (b"x-a", b"1"), (b"X-B", b"3")]
    assert analyze(headers).forward == headers


def test_content_length_framing() -> None:
    info = analyze([(b"Content-Length", b"42")])
    assert info.content_length == 42
    assert not info.chunked
    head = encode_request_head(b"POST", b"/x", info)
    assert head == b"POST /x HTTP/1.1\r\ncontent-length: 42\r\n\r\n"


def test_chunked_wins_over_content_length() -> None:
    info = analyze([(b"Content-Length", b"10"), (b"Transfer-Encoding", b"chunked")])
    assert info.chunked
    assert info.content_length is None
    head = encode_request_head(b"POST", b"/", info)
    assert b"transfer-encoding: chunked" in head
    assert b"content-length" not in head


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Content-Length", b"1"), (b"Content-Length", b"2")],
        [(b"Content-Length", b"-1")],
        [(b"Content-Length", b"1x")],
        [(b"Transfer-Encoding", b"gzip")],
        [(b"Transfer-Encoding", b"chunked, gzip")],
    ],
)
def test_ambiguous_framing_is_rejected(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(HeaderError):
        analyze(headers)


def test_repeated_identical_content_length_is_accepted() -> None:
    assert analyze([(b"Content-Length", b"5"), (b"content-length", b"5")]).content_length == 5


def test_connection_close_and_expect() -> None:
    info = analyze([(b"Connection", b"close"), (b"Expect", b"100-continue")])
    assert info.close
    assert info.expect_continue
    assert info.forward == [(b"Expect", b"100-continue")]


def test_upgrade_is_kept_only_as_an_upgrade() -> None:
    info = analyze([(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"), (b"Host", b"h")])
    assert info.upgrade == b"websocket"
    head = encode_request_head(b"GET", b"/ws", info)
    assert head.endswith(b"connection: upgrade\r\nupgrade: websocket\r\n\r\n")


def test_l5d_request_headers_are_consumed() -> None:
    info = analyze(
        [(b"l5d-dst-override", b"web.default.svc.cluster.local:80"), (b"l5d-require-id", b"x")],
        strip=L5D_REQUEST_STRIP,
    )
    assert info.dst_override == b"web.default.svc.cluster.local:80"
    assert info.forward == []


def test_upstream_proxy_connection_close_is_seen_and_stripped() -> None:
    info = analyze([(b"l5d-proxy-connection", b"close"), (b"grpc-status", b"14")])
    assert info.proxy_connection_close
    assert info.grpc_status == b"14"
    assert info.forward == [(b"grpc-status", b"14")]


def test_response_head_framing_and_close() -> None:
    info = analyze([(b"Content-Type", b"text/plain"), (b"Content-Length", b"3")])
    head = encode_response_head(200, b"OK", info, framing=b"content-length: 3\r\n", close=True)
    assert head == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 3\r\n"
        b"connection: close\r\n\r\n"
    )


def test_chunk_framing() -> None:
    assert b"".join(chunk(b"hello")) == b"5\r\nhello\r\n"
    assert last_chunk([]) == b"0\r\n\r\n"
    assert last_chunk([(b"grpc-status", b"0")]) == b"0\r\ngrpc-status: 0\r\n\r\n"
