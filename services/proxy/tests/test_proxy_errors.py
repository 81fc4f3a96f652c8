"""Linkerd's synthesized error responses."""

from __future__ import annotations

import httptools
import pytest
from gossamer_proxy.errors import (
    GrpcStatus,
    ProxyError,
    ProxyErrorKind,
    classify_connect_error,
    grpc_error_headers,
    h2_error_headers,
    http1_error_bytes,
    http1_error_response,
)


@pytest.mark.parametrize(
    ("kind", "status", "grpc"),
    [
        (ProxyErrorKind.CONNECT_REFUSED, 502, GrpcStatus.UNAVAILABLE),
        (ProxyErrorKind.CONNECT_TIMEOUT, 504, GrpcStatus.DEADLINE_EXCEEDED),
        (ProxyErrorKind.RESPONSE_TIMEOUT, 504, GrpcStatus.DEADLINE_EXCEEDED),
        (ProxyErrorKind.FAIL_FAST, 504, GrpcStatus.DEADLINE_EXCEEDED),
        (ProxyErrorKind.LOAD_SHED, 503, GrpcStatus.UNAVAILABLE),
        (ProxyErrorKind.UPSTREAM_CLOSED, 502, GrpcStatus.UNAVAILABLE),
        (ProxyErrorKind.LOOP, 508, GrpcStatus.UNAVAILABLE),
        (ProxyErrorKind.HEAD_TOO_LARGE, 431, GrpcStatus.RESOURCE_EXHAUSTED),
        (ProxyErrorKind.HEAD_TIMEOUT, 408, GrpcStatus.DEADLINE_EXCEEDED),
    ],
)
def test_linkerd_status_mapping(kind: ProxyErrorKind, status: int, grpc: GrpcStatus) -> None:
    assert kind.status == status
    assert kind.grpc_status is grpc


class _Collect:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_message_complete(self) -> None:
        self.done = True


@pytest.mark.parametrize("kind", list(ProxyErrorKind))
@pytest.mark.parametrize("close", [False, True])
def test_http1_error_responses_parse(kind: ProxyErrorKind, close: bool) -> None:
    sink = _Collect()
    parser = httptools.HttpResponseParser(sink)
    parser.feed_data(http1_error_bytes(kind, close=close))
    assert sink.done
    assert parser.get_status_code() == kind.status
    assert sink.headers[b"l5d-proxy-error"] == kind.message.encode()
    assert sink.headers[b"content-length"] == b"0"
    closes = close or kind.closes_connection
    assert (sink.headers.get(b"connection") == b"close") is closes
    assert (sink.headers.get(b"l5d-proxy-connection") == b"close") is closes


def test_detail_is_sanitised_into_one_header_line() -> None:
    raw = http1_error_response(ProxyErrorKind.CONNECT_FAILED, detail="10.0.0.1:80\r\nX-Evil: 1")
    assert b"\r\nX-Evil" not in raw
    assert b"l5d-proxy-error: connect error: 10.0.0.1:80  X-Evil: 1\r\n" in raw


def test_grpc_errors_are_trailers_only_responses() -> None:
    headers = dict(grpc_error_headers(ProxyErrorKind.CONNECT_TIMEOUT, "10.0.0.1:50051"))
    assert headers[":status"] == "200"
    assert headers["content-type"] == "application/grpc"
    assert headers["grpc-status"] == "4"
    assert headers["grpc-message"].startswith("connect timed out")
    assert headers["l5d-proxy-error"] == headers["grpc-message"]


def test_h2_errors_carry_the_http_status() -> None:
    headers = dict(h2_error_headers(ProxyErrorKind.LOAD_SHED))
    assert headers[":status"] == "503"
    assert headers["l5d-proxy-error"] == "service unavailable"


def test_connect_exceptions_map_to_kinds() -> None:
    assert classify_connect_error(TimeoutError()) is ProxyErrorKind.CONNECT_TIMEOUT
    assert classify_connect_error(ConnectionRefusedError()) is ProxyErrorKind.CONNECT_REFUSED
    assert classify_connect_error(OSError(113, "No route")) is ProxyErrorKind.CONNECT_FAILED
    err = ProxyError(ProxyErrorKind.LOAD_SHED)
    assert classify_connect_error(err) is ProxyErrorKind.LOAD_SHED
    assert str(ProxyError(ProxyErrorKind.CONNECT_REFUSED, "x:1")) == "connection refused: x:1"
