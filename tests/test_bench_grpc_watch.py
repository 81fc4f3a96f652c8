"""The destination benchmark's lean stream reader and its latency breakdown.

The reader's HTTP/2 side is checked against h2's server (a second implementation): requests
it sends parse, messages are cut however the DATA is framed, SETTINGS and PINGs are ACKed,
windows are returned, trailers end a stream with their status, and bad framing is refused.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root holds bench/

from bench import destination_bench, grpc_watch_client
from bench.grpc_watch_client import (
    GET_PATH,
    ProtocolViolationError,
    StreamSet,
    WatchConnection,
    frame,
    grpc_message,
)


def _server() -> h2.connection.H2Connection:
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    server.initiate_connection()
    return server


def _exchange(client: WatchConnection, server: h2.connection.H2Connection) -> list[object]:
    """Hands the client's pending bytes to the server; the server's events."""
    events = server.receive_data(bytes(client.outbound))
    client.outbound.clear()
    return list(events)


def _respond(server: h2.connection.H2Connection, stream_id: int) -> None:
    server.send_headers(stream_id, [(b":status", b"200"), (b"content-type", b"application/grpc")])


def test_requests_reach_the_server_as_grpc_calls() -> None:
    client = WatchConnection("127.0.0.1:8086")
    server = _server()
    ids = [client.open(GET_PATH, b"\x0a\x03web") for _ in range(3)]
    events = _exchange(client, server)
    requests = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    data = [e for e in events if isinstance(e, h2.events.DataReceived)]
    assert ids == [1, 3, 5]
    assert [e.stream_id for e in requests] == ids
    assert (b":path", GET_PATH.encode()) in requests[0].headers
    assert (b"content-type", b"application/grpc") in requests[0].headers
    assert {e.data for e in data} == {grpc_message(b"\x0a\x03web")}
    # The client opened its windows: the server may send far more than 64 KiB per stream.
    assert server.local_flow_control_window(1) == 2**31 - 1


def test_messages_are_cut_whatever_the_framing() -> None:
    client = WatchConnection("dst")
    server = _server()
    one, three = client.open(GET_PATH, b""), client.open(GET_PATH, b"")
    _exchange(client, server)
    client.feed(server.data_to_send())
    _respond(server, one)
    _respond(server, three)
    big = grpc_message(b"a" * 40_000)  # more than one 16 KiB frame
    server.send_data(one, big[:3])  # a frame ending inside the length prefix
    for start in range(3, len(big), 16_000):
        server.send_data(one, big[start : start + 16_000])
    server.send_data(three, grpc_message(b"x") + grpc_message(b"yz"))  # two in one frame
    completed = client.feed(server.data_to_send())
    assert completed == [one, three, three]
    assert client.streams[one].last == b"a" * 40_000
    assert client.streams[three].last == b"yz"
    assert client.streams[three].messages == 2


def test_bytes_split_anywhere_give_the_same_messages() -> None:
    client = WatchConnection("dst")
    server = _server()
    sid = client.open(GET_PATH, b"")
    _exchange(client, server)
    _respond(server, sid)
    for i in range(5):
        server.send_data(sid, grpc_message(bytes([i]) * (i + 1)))
    wire = server.data_to_send()
    completed = []
    for byte in range(len(wire)):  # one byte at a time
        completed += client.feed(wire[byte : byte + 1])
    assert completed == [sid] * 5
    assert client.streams[sid].last == b"\x04" * 5


def test_settings_and_pings_are_acknowledged() -> None:
    client = WatchConnection("dst")
    server = _server()
    _exchange(client, server)
    client.feed(server.data_to_send())
    server.ping(b"12345678")
    client.feed(server.data_to_send())
    events = _exchange(client, server)
    assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in events)
    acks = [e for e in events if isinstance(e, h2.events.PingAckReceived)]
    assert [a.ping_data for a in acks] == [b"12345678"]


def test_received_data_is_returned_to_the_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grpc_watch_client, "REPLENISH_AT", 1000)
    client = WatchConnection("dst")
    server = _server()
    sid = client.open(GET_PATH, b"")
    _exchange(client, server)
    _respond(server, sid)
    server.send_data(sid, grpc_message(b"m" * 1200))
    client.feed(server.data_to_send())
    events = _exchange(client, server)
    updated = {e.stream_id for e in events if isinstance(e, h2.events.WindowUpdated)}
    assert updated == {0, sid}


def test_trailers_and_resets_end_streams_with_why() -> None:
    client = WatchConnection("dst")
    server = _server()
    one, three = client.open(GET_PATH, b""), client.open(GET_PATH, b"")
    _exchange(client, server)
    _respond(server, one)
    server.send_headers(
        one, [(b"grpc-status", b"14"), (b"grpc-message", b"shutting down")], end_stream=True
    )
    server.reset_stream(three)
    client.feed(server.data_to_send())
    assert client.ended == [(one, "grpc-status 14 shutting down"), (three, "RST_STREAM 0")]


@pytest.mark.parametrize(
    ("wire", "problem"),
    [
        (frame(0, 0, 1, b"x" * 20_000), "exceeds"),  # larger than the client's MAX_FRAME_SIZE
        (frame(0, 0, 1, b"\x01\x00\x00\x00\x01z"), "message flag"),  # compressed
        (frame(0, 0, 1, b"\x00\xff\xff\xff\xff"), "message of"),  # 4 GiB message announced
        (frame(5, 4, 1, b"\x00\x00\x00\x02"), "PUSH_PROMISE"),
        (frame(1, 0, 1, b"") + frame(0, 0, 1, b""), "interrupted"),  # header block cut
    ],
)
def test_bad_framing_is_refused(wire: bytes, problem: str) -> None:
    client = WatchConnection("dst")
    client.open(GET_PATH, b"")
    with pytest.raises(ProtocolViolationError, match=problem):
        client.feed(wire)


def test_a_change_is_reported_once_every_stream_has_it() -> None:
    reports: list[int] = []
    streams = StreamSet(3, 2, reports.append)  # streams 0 and 1 on a connection, 2 on another
    first_connection, second_connection = streams._on_messages(0), streams._on_messages(2)
    first_connection([1], 10.0)  # stream 0, message 1
    second_connection([1, 1], 11.0)  # stream 2, messages 1 and 2
    assert reports == []
    first_connection([3, 1], 12.0)  # stream 1's message 1, stream 0's message 2
    assert reports == [1]
    assert (streams.first_at[1], streams.last_at[1]) == (10.0, 12.0)
    first_connection([3], 13.0)
    assert reports == [1, 2]
    assert (streams.first_at[2], streams.last_at[2]) == (11.0, 13.0)


def test_breakdown_splits_each_change_by_the_destinations_stamps() -> None:
    flushes: list[dict[str, Any]] = [
        # a flush before the first write (a resync) is not matched to a change
        {"marked_at": 0.5, "started_at": 0.5, "finished_at": 0.5, "written_at": 0.5},
        {"marked_at": 1.010, "started_at": 1.011, "finished_at": 1.014, "written_at": 1.015},
        {
            "marked_at": 2.030,
            "started_at": 2.030,
            "finished_at": 2.034,
            "written_at": 2.035,
            "collections": [1, 1, 0],
        },
    ]
    result = destination_bench.breakdown([1.0, 2.0], [0.016, 0.036], [0.020, 0.040], flushes)
    assert result["changes"] == 2
    assert result["slowest"] == {
        "apiserver": 30.0,
        "queued": 0.0,
        "refresh": 4.0,
        "write": 1.0,
        "to_first_stream": 1.0,
        "to_last_stream": 5.0,
        "total": 40.0,
        "collections": [1, 1, 0],
    }
    assert result["median"]["apiserver"] == 20.0
    assert result["changes_with_collections"] == [1, 1, 0]


async def test_the_reader_follows_the_real_destination_server() -> None:
    """End to end on loopback: the destination (memory sources, no apiserver) serves 5 Get
    streams over 3 connections; a slice change reaches all, and they agree on it."""
    from gossamer_api.proxy import destination_pb2
    from gossamer_destination import testing as t
    from gossamer_destination.app import DestinationApp
    from gossamer_destination.settings import DestinationSettings

    web = t.endpoint_slice("web", [("10.1.0.1", None), ("10.1.0.2", None)])
    sources = t.memory_sources(t.namespace("ns"), t.service("web"), web)
    settings = DestinationSettings(
        grpc_addr="127.0.0.1:0", policy_addr="", admin_addr="127.0.0.1:0"
    )
    app = DestinationApp(settings, dict(sources))
    await asyncio.wait_for(app.start(), 30)
    loop = asyncio.get_running_loop()
    reached: dict[int, asyncio.Future[None]] = {n: loop.create_future() for n in (1, 2)}
    streams = StreamSet(5, 2, lambda n: reached[n].set_result(None))
    try:
        request = destination_pb2.GetDestination(path="web.ns.svc.cluster.local:80")
        await streams.open("127.0.0.1", app.grpc_port, GET_PATH, request.SerializeToString())
        await asyncio.wait_for(reached[1], 30)
        assert len(streams.connections) == 3
        started = time.perf_counter()
        sources["endpointslices"].apply(t.endpoint_slice("web", [("10.1.0.1", None)]))
        await asyncio.wait_for(reached[2], 30)
        assert started <= streams.first_at[2] <= streams.last_at[2] <= time.perf_counter()
        (last,) = streams.last_messages()
        removed = destination_pb2.Update.FromString(last).remove.addrs
        assert [a.port for a in removed] == [8080]
        assert streams.errors == []
    finally:
        streams.close()
        await app.stop()
