"""Watch-stream framing, Status parsing and REST paths: the sans-io parts of the client."""

from __future__ import annotations

import json
from typing import Any

import pytest
from gossamer_kube.errors import (
    KubeApiError,
    KubeProtocolError,
    WatchExpired,
    error_from_response,
    error_from_status,
)
from gossamer_kube.resources import ENDPOINTSLICES, NODES, PODS, SERVERS, ResourceRef
from gossamer_kube.watch import WatchDecoder, WatchEvent


def _line(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def _pod(name: str, rv: str) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": name, "resourceVersion": rv}}


GONE = {
    "kind": "Status",
    "apiVersion": "v1",
    "status": "Failure",
    "message": "too old resource version: 1 (42)",
    "reason": "Expired",
    "code": 410,
}


def test_events_split_across_arbitrary_chunks() -> None:
    stream = (
        _line("ADDED", _pod("a", "10"))
        + _line("MODIFIED", _pod("a", "11"))
        + _line("BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": "12"}})
        + _line("DELETED", _pod("a", "13"))
    )
    for size in (1, 3, 7, 64, len(stream)):
        dec = WatchDecoder()
        events: list[WatchEvent] = []
        for i in range(0, len(stream), size):
            events.extend(dec.feed(stream[i : i + size]))
        events.extend(dec.end())
        assert [(e.type, e.resource_version) for e in events] == [
            ("ADDED", "10"),
            ("MODIFIED", "11"),
            ("BOOKMARK", "12"),
            ("DELETED", "13"),
        ]


def test_blank_lines_and_unterminated_final_line() -> None:
    dec = WatchDecoder()
    assert dec.feed(b"\n\r\n") == []
    assert dec.feed(_line("ADDED", _pod("x", "1")).rstrip(b"\n")) == []
    [event] = dec.end()
    assert event.object["metadata"]["name"] == "x"


def test_error_event_410_raises_watch_expired_after_earlier_events() -> None:
    dec = WatchDecoder()
    events = dec.feed(_line("ADDED", _pod("a", "5")) + _line("ERROR", GONE))
    assert [e.type for e in events] == ["ADDED"]
    with pytest.raises(WatchExpired) as info:
        dec.raise_pending()
    assert info.value.status == 410
    assert info.value.reason == "Expired"
    assert "too old" in info.value.message


def test_other_error_event_is_a_plain_api_error() -> None:
    status = {"kind": "Status", "code": 500, "reason": "InternalError", "message": "boom"}
    with pytest.raises(KubeApiError) as info:
        WatchDecoder().feed(_line("ERROR", status))
    assert not isinstance(info.value, WatchExpired)
    assert (info.value.status, info.value.reason, info.value.message) == (
        500,
        "InternalError",
        "boom",
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json}\n", "not JSON"),
        (b"[1, 2]\n", "not a JSON object"),
        (b'{"type": "ADDED"}\n', "no object"),
        (b'{"type": "RENAMED", "object": {}}\n', "unknown watch event type"),
        (b"\xff\xfe\n", "not JSON"),
    ],
)
def test_malformed_lines_are_protocol_errors(data: bytes, message: str) -> None:
    with pytest.raises(KubeProtocolError, match=message):
        WatchDecoder().feed(data)


def test_truncated_stream_is_an_error_not_a_lost_event() -> None:
    dec = WatchDecoder()
    dec.feed(b'{"type": "ADDED", "object": {"metadata"')
    with pytest.raises(KubeProtocolError):
        dec.end()


def test_oversized_event_is_refused() -> None:
    dec = WatchDecoder(max_event_bytes=100)
    with pytest.raises(KubeProtocolError, match="exceeds 100 bytes"):
        dec.feed(b"x" * 101)
    assert dec.feed(_line("ADDED", _pod("ok", "1")))[0].type == "ADDED"


def test_error_from_status_and_responses() -> None:
    err = error_from_status({"kind": "Status", "code": 404, "reason": "NotFound", "message": "m"})
    assert err.not_found
    assert (err.status, err.reason, err.message) == (404, "NotFound", "m")
    body = json.dumps(
        {"kind": "Status", "code": 409, "reason": "AlreadyExists", "message": "exists"}
    ).encode()
    err = error_from_response(409, body)
    assert err.conflict
    assert err.reason == "AlreadyExists"
    assert isinstance(error_from_response(410, json.dumps(GONE).encode()), WatchExpired)
    html = error_from_response(502, b"<html>bad gateway</html>")
    assert (html.status, html.reason, html.message) == (502, "Unknown", "<html>bad gateway</html>")
    assert error_from_response(403, b"").reason == "Forbidden"
    weird = error_from_status({"kind": "Status", "code": "x", "reason": 3})
    assert (weird.status, weird.reason, weird.message) == (500, "InternalError", "")


def test_resource_paths() -> None:
    assert PODS.path() == "/api/v1/pods"
    assert PODS.path("ns") == "/api/v1/namespaces/ns/pods"
    assert PODS.path("ns", "p", "status") == "/api/v1/namespaces/ns/pods/p/status"
    assert NODES.path(name="n1") == "/api/v1/nodes/n1"
    assert ENDPOINTSLICES.path("a") == "/apis/discovery.k8s.io/v1/namespaces/a/endpointslices"
    assert SERVERS.api_version == "policy.linkerd.io/v1beta3"
    assert ResourceRef("x.io", "v1", "things", True).path("n", "a/b") == (
        "/apis/x.io/v1/namespaces/n/things/a%2Fb"
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: NODES.path("ns"), "cluster-scoped"),
        (lambda: PODS.path(name="p"), "namespace is needed"),
        (lambda: PODS.path("", "p"), "namespace must not be empty"),
        (lambda: PODS.path("ns", ""), "name must not be empty"),
        (lambda: PODS.path("ns", subresource="status"), "needs an object name"),
    ],
)
def test_resource_path_misuse(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
