"""HTTP/2 upstream connections outlive the client connection they were made for.

On the single-upstream path a client connection that closes leaves its upstream connection
to the listener's next client connection to the same endpoint (no new connect or mTLS
handshake per client connection), and whatever a reset stream held of that connection's
receive window is handed back, so a connection used for long stays usable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import pytest
from gossamer_proxy.app import Proxy
from gossamer_proxy.http2.bridge import H2Server
from raw_h2 import REQUEST, CountingH2Backend, RawH2Client, outbound_context, until

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]

pytestmark = pytest.mark.timeout(90)

BIG = 1 << 20  # one stream's worth of the proxy's receive window
#: The client's stream window: a short answer fits, a big one waits in the proxy.
CLIENT_WINDOW = 16


async def _answered(client: RawH2Client, sid: int) -> None:
    await until(lambda: sid in client.responses, f"the response to stream {sid}")


async def test_a_closed_client_connections_upstream_serves_the_next_one(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    backend = CountingH2Backend()
    proxy = await start_proxy(await tcp_server(backend.handle))
    ctx = outbound_context(proxy)
    for round_ in range(3):
        client = await RawH2Client.connect(proxy.outbound_addr.port)
        try:
            sid = client.conn.get_next_available_stream_id()
            client.conn.send_headers(sid, REQUEST, end_stream=True)
            await client.send(client.conn.data_to_send())
            await _answered(client, sid)
            assert client.responses[sid] == 200
        finally:
            client.close()
        await until(lambda: len(ctx.h2_idle) == 1, f"round {round_}'s upstream to be kept")
    assert backend.streams == 3
    assert backend.connections == 1


async def test_an_upstream_with_a_goaway_is_not_kept(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    async def goaway_after_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        with contextlib.suppress(ConnectionError, h2.exceptions.ProtocolError):
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        conn.send_headers(event.stream_id, [(":status", "200")], end_stream=True)
                        conn.close_connection(last_stream_id=event.stream_id)
                writer.write(conn.data_to_send())
        writer.close()

    proxy = await start_proxy(await tcp_server(goaway_after_one))
    ctx = outbound_context(proxy)
    client = await RawH2Client.connect(proxy.outbound_addr.port)
    try:
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, REQUEST, end_stream=True)
        await client.send(client.conn.data_to_send())
        await _answered(client, sid)
    finally:
        client.close()
    await until(lambda: not ctx.connections, "the client connection to close")
    assert len(ctx.h2_idle) == 0


class _BigAnswers:
    """An h2 server: ``/big`` gets a 1 MiB body sent as its windows allow, anything else
    a two-byte one. Counts connections and the short bodies it sent in full."""

    def __init__(self) -> None:
        self.connections = 0
        self.short_sent = 0
        self._short: set[int] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        left: dict[int, int] = {}
        with contextlib.suppress(ConnectionError, h2.exceptions.ProtocolError):
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        path = dict(event.headers)[b":path"]
                        conn.send_headers(event.stream_id, [(":status", "200")])
                        left[event.stream_id] = BIG if path == b"/big" else 2
                        if path != b"/big":
                            self._short.add(event.stream_id)
                    elif isinstance(event, h2.events.StreamReset):
                        left.pop(event.stream_id, None)
                self._send_what_fits(conn, left)
                writer.write(conn.data_to_send())
        writer.close()

    def _send_what_fits(self, conn: h2.connection.H2Connection, left: dict[int, int]) -> None:
        for sid in list(left):
            while sid in left:
                window = conn.local_flow_control_window(sid)
                size = min(left[sid], window, conn.max_outbound_frame_size)
                if size <= 0:
                    break
                left[sid] -= size
                done = left[sid] == 0
                conn.send_data(sid, b"x" * size, end_stream=done)
                if done:
                    del left[sid]
                    self.short_sent += sid in self._short


async def test_reset_streams_hand_back_the_upstream_connection_window(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    backend = _BigAnswers()
    proxy = await start_proxy(await tcp_server(backend.handle))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    client = RawH2Client(reader, writer)
    big = [(n, v if n != ":path" else "/big") for n, v in REQUEST]
    try:
        client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: CLIENT_WINDOW})
        await client.send(client.conn.data_to_send())
        # Six answers of 1 MiB that the client lets through 16 bytes of, then resets: the
        # proxy holds (unacknowledged) all the backend could send of each, more in all than
        # the proxy's 4 MiB connection window toward the backend.
        ctx = outbound_context(proxy)
        for _ in range(6):
            sid = client.conn.get_next_available_stream_id()
            client.conn.send_headers(sid, big, end_stream=True)
            await client.send(client.conn.data_to_send())
            await _answered(client, sid)
            server = next(c for c in ctx.connections if isinstance(c, H2Server))
            flow = server.pairs[sid].to_down
            await until(
                lambda flow=flow: sum(len(d) for d, _ in flow.pending) + CLIENT_WINDOW >= BIG,
                "the proxy to hold the rest of the answer",
            )
            client.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            await client.send(client.conn.data_to_send())
        # The backend can still send a body over the same upstream connection.
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, REQUEST, end_stream=True)
        await client.send(client.conn.data_to_send())
        await until(lambda: backend.short_sent == 1, "the short answer to be sent in full")
    finally:
        client.close()
    assert backend.connections == 1
