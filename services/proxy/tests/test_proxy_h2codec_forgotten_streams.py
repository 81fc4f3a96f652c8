"""Frames on streams the proxy's HTTP/2 codec has forgotten: stream errors, never a
connection error that would fail every other stream on the connection (RFC 9113 §5.1).

The proxy's side is the codec from :func:`gossamer_proxy.h2codec.new_connection`; the peer
is plain ``h2``. Everything runs in memory.
"""

from __future__ import annotations

import types
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from gossamer_proxy import h2codec
from gossamer_proxy.h2codec import h2 as jh2
from gossamer_proxy.h2codec import missing_internals, new_connection, take_answers_owed
from gossamer_proxy.http2.bridge import _config

REQUEST = [(":method", "POST"), (":path", "/svc/Call"), (":scheme", "http"), (":authority", "a")]
RST_STREAM = 0x3
STREAM_CLOSED = 0x5


def _frames(data: bytes) -> list[tuple[int, int, int]]:
    """(type, stream id, RST_STREAM error code or 0) of each frame in ``data``."""
    found = []
    while data:
        length = int.from_bytes(data[:3], "big")
        kind = data[3]
        sid = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        code = int.from_bytes(data[9:13], "big") if kind == RST_STREAM else 0
        found.append((kind, sid, code))
        data = data[9 + length :]
    return found


def _proxy_and_app() -> tuple[Any, h2.connection.H2Connection]:
    """The proxy as the client of an app, connected."""
    proxy = new_connection(_config(client_side=True))
    app = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    proxy.initiate_connection()
    app.initiate_connection()
    app.receive_data(proxy.data_to_send())
    proxy.receive_data(app.data_to_send())
    app.receive_data(proxy.data_to_send())
    proxy.receive_data(app.data_to_send())
    return proxy, app


def _cancel_many(proxy: Any, app: h2.connection.H2Connection, count: int) -> int:
    """``count`` calls the proxy starts and cancels (gRPC deadlines); the next stream id."""
    sid = proxy.get_next_available_stream_id()
    for _ in range(count):
        proxy.send_headers(sid, REQUEST, end_stream=True)
        proxy.reset_stream(sid, jh2.errors.ErrorCodes.CANCEL)
        sid += 2
    app.receive_data(proxy.data_to_send())
    app.data_to_send()
    return sid


def _stream_one_answered_late(
    proxy: Any, app: h2.connection.H2Connection, *, body: bytes = b""
) -> bytes:
    """Stream 1: the app answers it, but the proxy cancels it before the answer arrives."""
    proxy.send_headers(1, REQUEST, end_stream=True)
    app.receive_data(proxy.data_to_send())
    app.send_headers(1, [(":status", "200"), ("content-type", "application/grpc")])
    if body:
        app.send_data(1, body)
    late = app.data_to_send()
    proxy.reset_stream(1, jh2.errors.ErrorCodes.CANCEL)
    return late


def test_late_headers_after_thousands_of_cancels_reset_only_that_stream() -> None:
    proxy, app = _proxy_and_app()
    late = _stream_one_answered_late(proxy, app)
    innocent = _cancel_many(proxy, app, 1500)  # more than any bounded record of resets
    proxy.send_headers(innocent, REQUEST, end_stream=True)
    app.receive_data(proxy.data_to_send())
    take_answers_owed(proxy)

    assert proxy.receive_data(late) == []
    assert _frames(proxy.data_to_send()) == [(RST_STREAM, 1, STREAM_CLOSED)]
    assert take_answers_owed(proxy) == 1
    assert take_answers_owed(proxy) == 0  # taken

    # The stream in flight on the same connection is answered as usual.
    app.send_headers(innocent, [(":status", "200")], end_stream=True)
    events = proxy.receive_data(app.data_to_send())
    assert any(isinstance(e, jh2.events.ResponseReceived) for e in events)
    assert len(proxy._closed_streams) == 0  # and nothing is kept of the 1,501 resets


def test_late_data_on_forgotten_streams_gives_back_the_connection_window() -> None:
    proxy, app = _proxy_and_app()
    body = b"x" * 16000
    sent = 0
    for _ in range(6):  # 384,000 bytes in all: six times the connection window
        sid = proxy.get_next_available_stream_id()
        proxy.send_headers(sid, REQUEST, end_stream=True)
        app.receive_data(proxy.data_to_send())
        app.send_headers(sid, [(":status", "200")])
        frames = 0
        while frames < 4 and app.outbound_flow_control_window > 0:
            chunk = body[: app.outbound_flow_control_window]
            app.send_data(sid, chunk)
            sent += len(chunk)
            frames += 1
        late = app.data_to_send()
        proxy.reset_stream(sid, jh2.errors.ErrorCodes.CANCEL)
        _cancel_many(proxy, app, 20)
        take_answers_owed(proxy)

        assert proxy.receive_data(late) == []
        answer = proxy.data_to_send()
        assert (RST_STREAM, sid, STREAM_CLOSED) in _frames(answer)
        # RST_STREAM owed for the HEADERS and for each DATA frame.
        assert take_answers_owed(proxy) == 1 + frames
        app.receive_data(answer)
    # Without the credit back, the app could never send more than one window (65,535).
    assert sent > 4 * 65535


def test_a_reset_on_a_forgotten_stream_is_not_answered() -> None:
    proxy, app = _proxy_and_app()
    proxy.send_headers(1, REQUEST, end_stream=True)
    app.receive_data(proxy.data_to_send())
    app.send_headers(1, [(":status", "200")], end_stream=True)
    proxy.receive_data(app.data_to_send())  # stream 1 ended normally
    _cancel_many(proxy, app, 10)  # and is cleaned up meanwhile
    proxy.data_to_send()

    # The app resets stream 3 (cancelled by the proxy and forgotten) as the RST crosses.
    reset_three = bytes.fromhex("00000403000000000300000008")
    assert proxy.receive_data(reset_three) == []
    assert proxy.data_to_send() == b""  # never a reset for a reset (RFC 9113 §5.4.2)
    assert take_answers_owed(proxy) == 0


def test_a_client_reusing_an_old_stream_id_gets_a_stream_error() -> None:
    server = new_connection(_config(client_side=False))
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    server.data_to_send()
    for sid in (1, 3, 5):
        client.send_headers(sid, REQUEST, end_stream=True)
        server.receive_data(client.data_to_send())
        server.send_headers(sid, [(":status", "200")], end_stream=True)
        client.receive_data(server.data_to_send())
    # Headers on stream 1 again (h2 sends what it is told): the stream ended long ago.
    client.streams.clear()
    client.highest_outbound_stream_id = 0
    client.send_headers(1, REQUEST, end_stream=True)

    assert server.receive_data(client.data_to_send()) == []
    assert _frames(server.data_to_send()) == [(RST_STREAM, 1, STREAM_CLOSED)]
    assert take_answers_owed(server) == 1


def test_a_frame_on_a_stream_never_opened_above_the_highest_is_still_a_connection_error() -> None:
    proxy, app = _proxy_and_app()
    proxy.send_headers(1, REQUEST, end_stream=True)
    app.receive_data(proxy.data_to_send())
    data_on_idle_nine = bytes.fromhex("00000100000000000978")
    with pytest.raises(jh2.exceptions.ProtocolError):
        proxy.receive_data(data_on_idle_nine)
    assert take_answers_owed(proxy) == 0


def test_the_installed_jh2_has_every_internal_relied_on() -> None:
    connection = __import__("jh2.connection").connection
    stream = __import__("jh2.stream").stream
    assert missing_internals(connection, stream) == []


def test_a_jh2_without_an_internal_is_named_in_a_clear_import_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = __import__("jh2.connection").connection

    class RenamedInternals(real.H2Connection):  # type: ignore[misc, name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._dispatch = self.__dict__.pop("_frame_dispatch_table")

    renamed = types.SimpleNamespace(H2Connection=RenamedInternals)
    stream = __import__("jh2.stream").stream
    assert missing_internals(renamed, stream) == ["H2Connection()._frame_dispatch_table"]  # type: ignore[arg-type]
    assert missing_internals(types.SimpleNamespace(), types.SimpleNamespace()) != []  # type: ignore[arg-type]

    monkeypatch.setattr(h2codec, "missing_internals", lambda *_: ["H2Connection._gone"])
    with pytest.raises(ImportError, match=r"jh2 >=5\.0\.15,<5\.1 .*H2Connection\._gone"):
        h2codec._check_codec.__wrapped__()
