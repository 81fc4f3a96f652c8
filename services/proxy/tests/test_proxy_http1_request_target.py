"""Sans-io HTTP/1 trust-boundary rules: one authority, coding lists, h2c offers, trailers."""

from __future__ import annotations

import pytest
from gossamer_proxy.http1 import request_target
from gossamer_proxy.http1.h2c import body_only_head
from gossamer_proxy.http1.headers import (
    HeaderError,
    analyze,
    encode_request_head,
    filter_trailers,
    last_chunk,
)
from gossamer_proxy.http1.request_target import (
    apply_request_authority,
    target_authority,
    valid_authority,
)
from gossamer_proxy.mesh.request import RequestView


def _settle(target: bytes, headers: list[tuple[bytes, bytes]], *, http10: bool = False) -> bytes:
    info = analyze(headers)
    apply_request_authority(info, target, http10=http10)
    return encode_request_head(b"GET", target, info)


def test_absolute_form_authority_wins_and_replaces_host() -> None:
    info = analyze([(b"Host", b"public.example"), (b"X-A", b"1")])
    apply_request_authority(info, b"http://admin.internal:8080/x?y", http10=False)
    assert info.host == b"admin.internal:8080"
    assert info.forward == [(b"Host", b"admin.internal:8080"), (b"X-A", b"1")]


def test_absolute_form_without_host_on_http10_gets_one() -> None:
    head = _settle(b"https://a.example/", [], http10=True)
    assert b"\r\nhost: a.example\r\n" in head


@pytest.mark.parametrize(
    ("target", "headers", "http10", "problem"),
    [
        (b"/x", [(b"Host", b"a"), (b"host", b"b")], False, "more than one Host"),
        (b"/x", [(b"Host", b"a"), (b"Host", b"a")], False, "more than one Host"),
        (b"/x", [], False, "missing Host"),
        (b"http://a/x", [], False, "missing Host"),
        (b"/x", [(b"Host", b"a b")], False, "invalid Host"),
        (b"/x", [(b"Host", b"u@a")], False, "invalid Host"),
        (b"/x", [(b"Host", b"a:99999")], False, "invalid Host"),
        (b"http://u:p@a/x", [(b"Host", b"a")], False, "userinfo"),
        (b"http:///x", [(b"Host", b"a")], False, "invalid authority"),
        (b"ftp://a/x", [(b"Host", b"a")], False, "unsupported scheme"),
        (b"x/y", [(b"Host", b"a")], False, "malformed request target"),
    ],
)
def test_authority_errors(
    target: bytes, headers: list[tuple[bytes, bytes]], http10: bool, problem: str
) -> None:
    info = analyze(headers)
    with pytest.raises(HeaderError, match=problem):
        apply_request_authority(info, target, http10=http10)


def test_valid_authorities() -> None:
    for value in (b"", b"a", b"a.b-c:80", b"10.0.0.1:8080", b"[::1]:443", b"[fe80::1%25e]"):
        assert valid_authority(value), value
    assert target_authority(b"*") is None
    assert target_authority(b"HTTP://A.example?q") == b"A.example"


def test_authority_verdicts_are_remembered_within_a_bound() -> None:
    """Each Host value is checked once, and hostile distinct values cannot grow the memo."""
    limit = request_target.VERDICTS_MAX
    for i in range(3 * limit):
        assert valid_authority(b"h%d.example:%d" % (i, i % 65536))
    assert 0 < len(request_target.VERDICTS) <= limit
    for _ in range(2):  # the second time from the memo: the same verdicts
        assert not valid_authority(b"a b")
        assert not valid_authority(b"a:99999")
        assert valid_authority(b"a:80")
        info = analyze([(b"Host", b"u@a")])
        with pytest.raises(HeaderError, match="invalid Host"):
            apply_request_authority(info, b"/x", http10=False)


def test_request_view_prefers_the_target_authority() -> None:
    view = RequestView.from_target("GET", "http://admin.internal/x", authority="public.example")
    assert (view.authority, view.path) == ("admin.internal", "/x")


def test_transfer_coding_list_is_kept() -> None:
    info = analyze([(b"Transfer-Encoding", b"gzip"), (b"Transfer-Encoding", b"Chunked")])
    assert (info.chunked, info.codings) == (True, (b"gzip",))
    assert b"transfer-encoding: gzip, chunked\r\n" in encode_request_head(b"POST", b"/", info)


@pytest.mark.parametrize("value", [b"chunked, gzip", b"chunked, chunked", b"gzip"])
def test_chunked_must_be_last_and_once(value: bytes) -> None:
    with pytest.raises(HeaderError):
        analyze([(b"Transfer-Encoding", value)])


def test_h2c_offer_is_stripped_with_its_settings() -> None:
    info = analyze(
        [
            (b"Host", b"a"),
            (b"Connection", b"Upgrade, HTTP2-Settings"),
            (b"Upgrade", b"h2c"),
            (b"HTTP2-Settings", b"AAMAAABkAAQAAP__"),
        ]
    )
    assert info.h2c_stripped
    assert info.upgrade is None
    assert info.forward == [(b"Host", b"a")]
    assert b"upgrade" not in encode_request_head(b"GET", b"/", info).lower()
    both = analyze([(b"Upgrade", b"websocket, h2c")])
    assert both.upgrade == b"websocket"
    assert body_only_head(analyze([(b"Content-Length", b"5")])).endswith(
        b"content-length: 5\r\n\r\n"
    )


def test_trailers_are_filtered() -> None:
    trailers = [
        (b"L5D-Client-Id", b"forged"),
        (b"l5d-dst-override", b"x"),
        (b"Host", b"evil"),
        (b"Content-Length", b"9"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Connection", b"close"),
        (b"TE", b"trailers"),
        (b"Trailer", b"x"),
        (b"Upgrade", b"x"),
        (b"grpc-status", b"0"),
        (b"X-Sum", b"1"),
    ]
    assert filter_trailers(trailers) == [(b"grpc-status", b"0"), (b"X-Sum", b"1")]
    assert last_chunk(trailers) == b"0\r\ngrpc-status: 0\r\nX-Sum: 1\r\n\r\n"
