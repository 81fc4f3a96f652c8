"""The frames the HTTP/2 bridge sends: no more than the exchange needs.

A request body that ends without trailers reaches the backend as DATA frames whose last one
carries END_STREAM, not followed by an empty DATA frame that only ends the stream (each
frame costs both proxies of a two-hop path a parse and a build).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from gossamer_proxy.app import Proxy
from raw_h2 import RawH2Client, outbound_context, until

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]

pytestmark = pytest.mark.timeout(60)

GRPC_REQUEST = [
    (":method", "POST"),
    (":path", "/pkg.Svc/Unary"),
    (":scheme", "http"),
    (":authority", "app"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]
MESSAGE = b"\x00\x00\x00\x00\x05hello"


class _DataFrames:
    """An h2 server recording each stream's DATA frames as ``(length, ends the stream)``."""

    def __init__(self) -> None:
        self.frames: dict[int, list[tuple[int, bool]]] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        with contextlib.suppress(ConnectionError, h2.exceptions.ProtocolError):
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        frames = self.frames.setdefault(event.stream_id, [])
                        frames.append((len(event.data), event.stream_ended is not None))
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        conn.send_headers(
                            event.stream_id,
                            [(":status", "200"), ("content-type", "application/grpc")],
                        )
                        conn.send_data(event.stream_id, MESSAGE)
                        conn.send_headers(event.stream_id, [("grpc-status", "0")], end_stream=True)
                writer.write(conn.data_to_send())
        writer.close()


async def test_a_request_body_ends_on_its_last_data_frame(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    backend = _DataFrames()
    proxy = await start_proxy(await tcp_server(backend.handle))
    client = await RawH2Client.connect(proxy.outbound_addr.port)
    try:
        sids = []
        for _ in range(3):
            sid = client.conn.get_next_available_stream_id()
            client.conn.send_headers(sid, GRPC_REQUEST)
            client.conn.send_data(sid, MESSAGE, end_stream=True)
            sids.append(sid)
        await client.send(client.conn.data_to_send())
        await until(lambda: all(s in client.responses for s in sids), "the responses")
    finally:
        client.close()
    assert len(backend.frames) == 3
    for frames in backend.frames.values():
        assert frames == [(len(MESSAGE), True)]


async def _data_frames_of_answer(port: int) -> list[tuple[int, bool]]:
    """One GET through the proxy; the DATA frames of its answer as ``(length, ends)``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(
        sid,
        [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "app")],
        end_stream=True,
    )
    writer.write(conn.data_to_send())
    frames: list[tuple[int, bool]] = []
    ended = False
    try:
        while not ended and (data := await reader.read(65536)):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived) and event.stream_id == sid:
                    frames.append((len(event.data), event.stream_ended is not None))
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                    ended = True
            writer.write(conn.data_to_send())
    finally:
        writer.close()
    assert ended, "the answer did not end"
    return frames


async def test_a_response_body_ends_on_its_last_data_frame(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    async def answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        with contextlib.suppress(ConnectionError, h2.exceptions.ProtocolError):
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        conn.send_headers(event.stream_id, [(":status", "200")])
                        conn.send_data(event.stream_id, b"ok", end_stream=True)
                writer.write(conn.data_to_send())
        writer.close()

    proxy = await start_proxy(await tcp_server(answer_ok))
    assert await _data_frames_of_answer(proxy.outbound_addr.port) == [(2, True)]


async def test_a_client_that_said_goaway_is_closed_once_its_last_stream_is_done(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    """GOAWAY with a stream in flight (as a load generator ends a timed run), and the
    answer comes later: once nothing is left, the proxy closes the connection instead of
    leaving it, and its upstream connection, open until the client goes."""
    got_request = asyncio.Event()
    answer = asyncio.Event()

    async def answers_when_told(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        with contextlib.suppress(ConnectionError, h2.exceptions.ProtocolError):
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.StreamEnded):
                        got_request.set()
                        await answer.wait()
                        conn.send_headers(event.stream_id, [(":status", "200")])
                        conn.send_data(event.stream_id, MESSAGE)
                        conn.send_headers(event.stream_id, [("grpc-status", "0")], end_stream=True)
                writer.write(conn.data_to_send())
        writer.close()

    proxy = await start_proxy(await tcp_server(answers_when_told))
    client = await RawH2Client.connect(proxy.outbound_addr.port)
    try:
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, GRPC_REQUEST)
        client.conn.send_data(sid, MESSAGE, end_stream=True)
        await client.send(client.conn.data_to_send())
        await asyncio.wait_for(got_request.wait(), 20)
        client.conn.close_connection(last_stream_id=0)
        await client.send(client.conn.data_to_send())
        server = next(iter(outbound_context(proxy).connections))
        await until(lambda: getattr(server, "_goaway", False), "the proxy to take the GOAWAY")
        answer.set()
        await until(lambda: client.closed, "the proxy to close the connection")
    finally:
        client.close()


async def test_a_client_that_said_goaway_is_closed_once_it_resets_its_last_stream(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    """GOAWAY, then RST_STREAM of the one stream in flight (as a load generator ends a
    timed run): nothing is left to finish, so the proxy closes the connection instead of
    leaving it open, and its upstream with it, until the client goes."""
    requests = 0

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        with contextlib.suppress(ConnectionError, h2.exceptions.ProtocolError):
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    requests += isinstance(event, h2.events.RequestReceived)
                writer.write(conn.data_to_send())
        writer.close()

    proxy = await start_proxy(await tcp_server(never_answers))
    client = await RawH2Client.connect(proxy.outbound_addr.port)
    try:
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, GRPC_REQUEST)
        client.conn.send_data(sid, MESSAGE, end_stream=True)
        await client.send(client.conn.data_to_send())
        await until(lambda: requests == 1, "the request to reach the backend")
        client.conn.close_connection()
        await client.send(client.conn.data_to_send())
        rst_stream = (4).to_bytes(3, "big") + b"\x03\x00" + sid.to_bytes(4, "big")
        await client.send(rst_stream + (8).to_bytes(4, "big"))  # CANCEL
        await until(lambda: client.closed, "the proxy to close the connection")
    finally:
        client.close()
