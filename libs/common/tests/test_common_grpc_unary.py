"""The lean unary gRPC server, driven by grpcio's own client (and raw HTTP/2 where grpcio won't)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
from gossamer_common.grpc_http2 import RequestError, Status
from gossamer_common.grpc_unary import (
    HEADER_TABLE_SIZE,
    MAX_RESET_RECORDS,
    CallInfo,
    UnaryMethod,
    UnaryServer,
)

TIMEOUT = 5.0
ECHO = "/test.Echo/Echo"
FAIL = "/test.Echo/Fail"
CRASH = "/test.Echo/Crash"
HANG = "/test.Echo/Hang"
BIG = "/test.Echo/Big"
CANCELLED_UNDER = "/test.Echo/CancelledUnder"


class Handlers:
    def __init__(self) -> None:
        self.peers: list[str] = []
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()

    async def echo(self, message: bytes, call: CallInfo) -> bytes:
        self.peers.append(call.peer)
        return b"echo:" + message

    async def fail(self, message: bytes, call: CallInfo) -> bytes:
        raise RequestError(Status.FAILED_PRECONDITION, "no 100% sure\n" + message.decode())

    async def crash(self, message: bytes, call: CallInfo) -> bytes:
        raise RuntimeError("secret detail")

    async def hang(self, message: bytes, call: CallInfo) -> bytes:
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return b"released"

    async def big(self, message: bytes, call: CallInfo) -> bytes:
        return bytes(range(256)) * 1000  # 256,000 bytes: many frames, past the default window

    async def cancelled_under(self, message: bytes, call: CallInfo) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        future.cancel()  # e.g. a library's future, cancelled under the handler
        return await future


class Served:
    def __init__(self, server: UnaryServer, port: int, handlers: Handlers) -> None:
        self.server = server
        self.port = port
        self.handlers = handlers
        self.address = f"127.0.0.1:{port}"


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    handlers = Handlers()
    server = UnaryServer(
        [
            UnaryMethod(ECHO, handlers.echo, max_request_bytes=1024),
            UnaryMethod(FAIL, handlers.fail),
            UnaryMethod(CRASH, handlers.crash),
            UnaryMethod(HANG, handlers.hang),
            UnaryMethod(BIG, handlers.big),
            UnaryMethod(CANCELLED_UNDER, handlers.cancelled_under),
        ]
    )
    port = await server.listen("127.0.0.1", 0)
    try:
        yield Served(server, port, handlers)
    finally:
        await server.stop(1.0)


def _call(channel: grpc.aio.Channel, path: str) -> grpc.aio.UnaryUnaryMultiCallable:
    return channel.unary_unary(path, None, None)  # bytes in, bytes out


async def test_a_call_gets_the_handlers_answer_and_the_peer(served: Served) -> None:
    async with grpc.aio.insecure_channel(served.address) as channel:
        answers = await asyncio.gather(
            *(_call(channel, ECHO)(b"hi %d" % i, timeout=TIMEOUT) for i in range(50))
        )
    assert answers == [b"echo:hi %d" % i for i in range(50)]
    assert served.handlers.peers[0].startswith("ipv4:127.0.0.1:")


async def test_a_refusal_carries_its_status_and_a_percent_encoded_message(served: Served) -> None:
    async with grpc.aio.insecure_channel(served.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(channel, FAIL)(b"x", timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == "no 100% sure\nx"


async def test_a_crashing_handler_answers_unknown_without_its_detail(served: Served) -> None:
    async with grpc.aio.insecure_channel(served.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(channel, CRASH)(b"x", timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.UNKNOWN
        assert "secret" not in (err.value.details() or "")
        assert await _call(channel, ECHO)(b"still", timeout=TIMEOUT) == b"echo:still"


async def test_unknown_methods_and_oversized_requests_are_refused(served: Served) -> None:
    async with grpc.aio.insecure_channel(served.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(channel, "/test.Echo/Nope")(b"x", timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(channel, ECHO)(b"x" * 2000, timeout=TIMEOUT)  # the method allows 1,024
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await _call(channel, ECHO)(b"x" * 1000, timeout=TIMEOUT) == b"echo:" + b"x" * 1000


async def test_a_large_answer_crosses_frames_and_flow_control_windows(served: Served) -> None:
    async with grpc.aio.insecure_channel(served.address) as channel:
        answer = await _call(channel, BIG)(b"", timeout=TIMEOUT)
    assert answer == bytes(range(256)) * 1000


async def test_a_deadline_cancels_the_handler(served: Served) -> None:
    async with grpc.aio.insecure_channel(served.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(channel, HANG)(b"", timeout=0.2)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.wait_for(served.handlers.cancelled.wait(), TIMEOUT)


async def test_a_client_cancel_cancels_the_handler(served: Served) -> None:
    async with grpc.aio.insecure_channel(served.address) as channel:
        call = _call(channel, HANG)(b"", timeout=60)
        await asyncio.wait_for(served.handlers.entered.wait(), TIMEOUT)
        call.cancel()
        await asyncio.wait_for(served.handlers.cancelled.wait(), TIMEOUT)
        assert await _call(channel, ECHO)(b"next", timeout=TIMEOUT) == b"echo:next"


async def test_stop_lets_calls_in_flight_finish_and_refuses_new_connections(
    served: Served,
) -> None:
    async with grpc.aio.insecure_channel(served.address) as channel:
        call = _call(channel, HANG)(b"", timeout=TIMEOUT)
        await asyncio.wait_for(served.handlers.entered.wait(), TIMEOUT)
        stopping = asyncio.create_task(served.server.stop(TIMEOUT))
        await asyncio.sleep(0)  # let stop() send its GOAWAY before the call is released
        served.handlers.release.set()
        assert await call == b"released"
        await asyncio.wait_for(stopping, TIMEOUT)
    assert not served.handlers.cancelled.is_set()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", served.port)


async def test_stop_cancels_calls_still_running_after_the_grace(served: Served) -> None:
    async with grpc.aio.insecure_channel(served.address) as channel:
        call = _call(channel, HANG)(b"", timeout=TIMEOUT)
        await asyncio.wait_for(served.handlers.entered.wait(), TIMEOUT)
        await served.server.stop(0.05)
        await asyncio.wait_for(served.handlers.cancelled.wait(), TIMEOUT)
        with pytest.raises(grpc.aio.AioRpcError):
            await call


async def _raw_connection(
    port: int,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, h2.connection.H2Connection]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    return reader, writer, conn


async def _until_goaway(
    reader: asyncio.StreamReader, conn: h2.connection.H2Connection
) -> h2.errors.ErrorCodes | None:
    async with asyncio.timeout(TIMEOUT):
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ConnectionTerminated):
                    return event.error_code  # type: ignore[return-value]
    return None


async def test_a_client_resetting_calls_by_the_hundred_is_told_to_calm_down(
    served: Served,
) -> None:
    reader, writer, conn = await _raw_connection(served.port)
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", HANG.encode()),
        (b":authority", b"x"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    for i in range(300):
        stream_id = 1 + 2 * i
        conn.send_headers(stream_id, headers)
        conn.send_data(stream_id, b"\x00\x00\x00\x00\x00", end_stream=True)
        conn.reset_stream(stream_id)
    writer.write(conn.data_to_send())
    assert await _until_goaway(reader, conn) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    writer.close()


async def test_the_deadline_runs_from_the_request_head_so_a_stalled_upload_expires(
    served: Served,
) -> None:
    reader, writer, conn = await _raw_connection(served.port)
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", ECHO.encode()),
        (b":authority", b"x"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"grpc-timeout", b"50m"),
    ]
    conn.send_headers(1, headers)
    conn.send_data(1, b"\x00\x00\x00\x00\x08half")  # 4 of the message's 8 bytes, then nothing
    writer.write(conn.data_to_send())
    status = None
    async with asyncio.timeout(TIMEOUT):  # before: no answer ever, the body never ends
        while status is None and (data := await reader.read(65536)):
            for event in conn.receive_data(data):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    status = dict(event.headers).get(b"grpc-status", status)
            writer.write(conn.data_to_send())
    writer.close()
    assert status == b"%d" % Status.DEADLINE_EXCEEDED


async def test_a_protocol_violation_gets_goaway_and_a_closed_connection(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not the HTTP/2 preface
    received = await asyncio.wait_for(reader.read(), TIMEOUT)  # until the server closes
    writer.close()
    assert b"\x07\x00\x00\x00\x00\x00" in received  # a GOAWAY frame (type 7) on stream 0


async def test_a_connection_that_never_sends_a_request_is_closed() -> None:
    server = UnaryServer([], handshake_timeout=0.05)
    port = await server.listen("127.0.0.1", 0)
    try:
        reader, writer, conn = await _raw_connection(port)
        assert await _until_goaway(reader, conn) == h2.errors.ErrorCodes.NO_ERROR
        writer.close()
    finally:
        await server.stop(1.0)


async def test_a_peer_that_never_acks_keepalive_pings_is_dropped() -> None:
    server = UnaryServer([], keepalive_interval=0.02, keepalive_timeout=0.1)
    port = await server.listen("127.0.0.1", 0)
    try:
        reader, writer, conn = await _raw_connection(port)
        pings = 0
        async with asyncio.timeout(TIMEOUT):
            while data := await reader.read(65536):  # read, but never answer: no PING ACK
                pings += sum(isinstance(e, h2.events.PingReceived) for e in conn.receive_data(data))
        assert pings == 1  # the connection closed after the one unanswered PING
        assert not server.connections
        writer.close()
    finally:
        await server.stop(1.0)


async def test_a_handler_cancelled_under_it_answers_unknown(served: Served) -> None:
    async with grpc.aio.insecure_channel(served.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(channel, CANCELLED_UNDER)(b"x", timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.UNKNOWN
        assert await _call(channel, ECHO)(b"next", timeout=TIMEOUT) == b"echo:next"


REQUEST_HEADERS = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", ECHO.encode()),
    (b":authority", b"x"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
]


async def _responses(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    conn: h2.connection.H2Connection,
    count: int,
) -> dict[int, bytes]:
    """Reads until ``count`` streams have ended; returns each one's response bytes."""
    bodies: dict[int, bytes] = {}
    ended = 0
    async with asyncio.timeout(TIMEOUT):
        while ended < count:
            data = await reader.read(65536)
            assert data, f"the server closed after {ended} of {count} answers"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    sid = event.stream_id or 0
                    bodies[sid] = bodies.get(sid, b"") + (event.data or b"")
                    conn.acknowledge_received_data(event.flow_controlled_length or 0, sid)
                elif isinstance(event, h2.events.StreamEnded):
                    ended += 1
            writer.write(conn.data_to_send())
    return bodies


async def test_a_client_goaway_still_gets_the_answers_to_calls_it_sent(served: Served) -> None:
    reader, writer, conn = await _raw_connection(served.port)
    conn.send_headers(1, REQUEST_HEADERS)
    conn.send_data(1, b"\x00\x00\x00\x00\x02hi", end_stream=True)
    writer.write(conn.data_to_send())
    writer.write(b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + bytes(8))  # GOAWAY(0, NO_ERROR)
    assert await _responses(reader, writer, conn, 1) == {1: b"\x00\x00\x00\x00\x07echo:hi"}
    async with asyncio.timeout(TIMEOUT):  # then the server closes
        with contextlib.suppress(ConnectionResetError):  # maybe before reading the client's ACKs
            while await reader.read(65536):
                pass
    assert not served.server.connections
    writer.close()


async def test_many_calls_on_one_connection_keep_no_record_of_streams_that_ended(
    served: Served,
) -> None:
    reader, writer, conn = await _raw_connection(served.port)
    calls = 300
    for i in range(calls):
        conn.send_headers(1 + 2 * i, REQUEST_HEADERS)
        conn.send_data(1 + 2 * i, b"\x00\x00\x00\x00\x00", end_stream=True)
        if i % 100 == 99:  # no more at once than the server's concurrent stream limit
            writer.write(conn.data_to_send())
            assert len(await _responses(reader, writer, conn, 100)) == 100
    (server_conn,) = served.server.connections
    assert len(server_conn.h2._closed_streams) == 0  # jh2 alone keeps 65,536
    writer.close()


async def test_a_connection_remembers_only_its_newest_resets(served: Served) -> None:
    reader, writer, conn = await _raw_connection(served.port)
    unknown = [
        (b":path", b"/test.Echo/Nope") if k == b":path" else (k, v) for k, v in REQUEST_HEADERS
    ]
    calls = MAX_RESET_RECORDS + 100
    for i in range(calls):
        conn.send_headers(1 + 2 * i, unknown)  # no END_STREAM: refused, then reset by the server
        if i % 100 == 99 or i == calls - 1:
            writer.write(conn.data_to_send())
            await _responses(reader, writer, conn, i % 100 + 1)
    (server_conn,) = served.server.connections
    records = server_conn.h2._closed_streams
    assert len(records) == MAX_RESET_RECORDS
    assert 1 not in records  # the oldest forgotten
    assert 2 * MAX_RESET_RECORDS + 1 in records
    writer.close()


async def test_the_server_advertises_a_small_header_table(served: Served) -> None:
    reader, writer, conn = await _raw_connection(served.port)
    settings: dict[int, int] = {}
    async with asyncio.timeout(TIMEOUT):
        while not settings:
            for event in conn.receive_data(await reader.read(65536)):
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    changed = event.changed_settings.items()
                    settings = {code: setting.new_value for code, setting in changed}
    assert settings[h2.settings.SettingCodes.HEADER_TABLE_SIZE] == HEADER_TABLE_SIZE == 4096
    writer.close()
