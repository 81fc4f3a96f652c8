"""HTTP/2 flood defences of a real proxy on loopback (RFC 9113 §10.5, CVE-2023-44487).

Raw sockets speak the frames an abusive client sends; the assertions look at what the
proxy buffered, how many streams and connections reached the backend, and what the client
was told (GOAWAY with ENHANCE_YOUR_CALM), never at how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

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


def _frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", stream_id)
        + payload
    )


PING = _frame(0x6, 0, 0, b"12345678")
EMPTY_SETTINGS = _frame(0x4, 0, 0, b"")


async def _h2_server_of(proxy: Proxy) -> H2Server:
    ctx = outbound_context(proxy)
    await until(lambda: any(isinstance(c, H2Server) for c in ctx.connections), "the h2 server")
    return next(c for c in ctx.connections if isinstance(c, H2Server))


def _dead_port() -> tuple[str, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        host, port = s.getsockname()
    return str(host), int(port)


async def _silent_client(port: int) -> socket.socket:
    """A client socket with a tiny receive buffer that it never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def _flood_without_reading(
    proxy: Proxy, sock: socket.socket, frame: bytes
) -> tuple[H2Server, int, int]:
    """Send up to 16 MB of ``frame`` and never read; returns the server, bytes sent, peak.

    Stops sending once the proxy stops reading (or closes); the peak is the largest write
    buffer the proxy held for this client at any check.
    """
    loop = asyncio.get_running_loop()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    await loop.sock_sendall(sock, conn.data_to_send())
    server = await _h2_server_of(proxy)
    transport: Any = server.transport
    assert transport is not None
    chunk = frame * (65536 // len(frame))
    sent = peak = 0

    def stalled() -> bool:
        return transport.is_closing() or not transport.is_reading()

    for _ in range(16 * 1024 * 1024 // len(chunk)):
        send = asyncio.ensure_future(loop.sock_sendall(sock, chunk))
        while not send.done():
            await asyncio.wait({send}, timeout=0.05)
            peak = max(peak, transport.get_write_buffer_size())
            if not send.done() and stalled():
                send.cancel()
                break
        if not send.done() or send.cancelled() or send.exception() is not None:
            break
        sent += len(chunk)
        peak = max(peak, transport.get_write_buffer_size())
    # Let the proxy take in whatever it is still willing to read.
    await until(lambda: stalled() or server.tcp.read.value >= sent, "the proxy to read")
    peak = max(peak, transport.get_write_buffer_size())
    return server, sent, peak


@pytest.mark.parametrize("frame", [PING, EMPTY_SETTINGS], ids=["ping", "settings"])
async def test_control_frame_flood_from_a_client_that_never_reads_is_bounded(
    start_proxy: StartProxy, frame: bytes
) -> None:
    proxy = await start_proxy(_dead_port())
    sock = await _silent_client(proxy.outbound_addr.port)
    try:
        server, sent, peak = await _flood_without_reading(proxy, sock, frame)
        # The proxy stopped reading frames it would owe ACKs for (closing the connection
        # if the ACKs owed by then passed the limit), holding well under a megabyte for it.
        transport = server.transport
        assert transport is not None
        assert transport.is_closing() or not transport.is_reading()
        assert sent < 16 * 1024 * 1024
        assert peak < 1024 * 1024, peak
        # Left idle, the connection is aborted: a GOAWAY the client never reads would keep
        # it (and its buffer) forever.
        now = asyncio.get_running_loop().time()
        server.tick(now)
        server.tick(now + outbound_context(proxy).limits.idle_timeout)
        server.tick(now + outbound_context(proxy).limits.idle_timeout + 1)
        await until(lambda: server not in outbound_context(proxy).connections, "the abort")
    finally:
        sock.close()


async def test_rapid_reset_gets_goaway_enhance_your_calm_and_no_upstream_work(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    backend = CountingH2Backend()
    proxy = await start_proxy(await tcp_server(backend.handle))
    client = await RawH2Client.connect(proxy.outbound_addr.port)
    try:
        pairs = 0
        for _ in range(40):  # up to 20,000 HEADERS + RST_STREAM pairs, 500 per write
            for _ in range(500):
                sid = client.conn.get_next_available_stream_id()
                client.conn.send_headers(sid, REQUEST, end_stream=True)
                client.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                pairs += 1
            if not await client.send(client.conn.data_to_send()) or client.goaway:
                break
        await until(lambda: client.closed, "the proxy to close the connection")
    finally:
        client.close()
    assert client.goaway is not None
    assert client.goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    # A stream reset in the read that opened it never reaches the backend; only a pair
    # split across two reads can, so the backend sees next to nothing.
    assert backend.streams <= 10, backend.streams
    assert backend.connections <= 1


async def test_occasional_resets_keep_the_connection(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    backend = CountingH2Backend()
    proxy = await start_proxy(await tcp_server(backend.handle))
    client = await RawH2Client.connect(proxy.outbound_addr.port)
    try:
        for _ in range(100):  # a client cancelling one call in two (well under the burst)
            sid = client.conn.get_next_available_stream_id()
            client.conn.send_headers(sid, REQUEST, end_stream=True)
            client.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            await client.send(client.conn.data_to_send())
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, REQUEST, end_stream=True)
        await client.send(client.conn.data_to_send())
        await until(lambda: sid in client.responses, "the last response")
    finally:
        client.close()
    assert client.goaway is None
    assert client.responses[sid] == 200


async def test_resets_while_connecting_share_one_upstream_connect(
    start_proxy: StartProxy, tcp_server: TcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = CountingH2Backend()
    proxy = await start_proxy(await tcp_server(backend.handle))
    connector = outbound_context(proxy).connector
    original = connector.open
    attempts = 0
    release = asyncio.Event()

    async def gated_open(*args: Any, **kwargs: Any) -> Any:
        nonlocal attempts
        attempts += 1
        await release.wait()  # the connect is still under way while streams come and go
        return await original(*args, **kwargs)

    monkeypatch.setattr(connector, "open", gated_open)
    client = await RawH2Client.connect(proxy.outbound_addr.port)
    server = await _h2_server_of(proxy)
    try:
        for _ in range(10):  # 10 rounds: 10 streams open (waiting for the connect), then reset
            sids = []
            for _ in range(10):
                sid = client.conn.get_next_available_stream_id()
                client.conn.send_headers(sid, REQUEST, end_stream=True)
                sids.append(sid)
            await client.send(client.conn.data_to_send())
            await until(lambda: len(server.pairs) == 10, "the streams to wait for a connection")
            for sid in sids:
                client.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            await client.send(client.conn.data_to_send())
            await until(lambda: not server.pairs, "the resets")
        release.set()
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, REQUEST, end_stream=True)
        await client.send(client.conn.data_to_send())
        await until(lambda: sid in client.responses, "a response over the one connection")
    finally:
        client.close()
    assert attempts == 1
    assert backend.connections == 1
    assert backend.streams == 1  # the reset streams never reached the app
    assert client.goaway is None


# -- DATA toward a peer that does not read ------------------------------------------------

BIG = 32 * 1024 * 1024
HUGE_WINDOW = 2**31 - 1


def _open_windows(conn: h2.connection.H2Connection) -> None:
    """Advertise the largest windows HTTP/2 allows: only the transport can push back."""
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: HUGE_WINDOW})
    conn.increment_flow_control_window(HUGE_WINDOW - 65535)


class _Sender:
    """Sends ``BIG`` bytes on one stream of ``conn`` as fast as its windows allow."""

    def __init__(self, conn: h2.connection.H2Connection) -> None:
        self.conn = conn
        self.stream_id = 0
        self.sent = 0
        self.blocked = False

    @property
    def done(self) -> bool:
        return self.sent >= BIG

    def send_more(self) -> None:
        if not self.stream_id or self.done:
            return
        conn = self.conn
        piece = b"x" * conn.max_outbound_frame_size
        while not self.done:
            window = min(
                conn.local_flow_control_window(self.stream_id), len(piece), BIG - self.sent
            )
            if window <= 0:
                self.blocked = True
                return
            conn.send_data(self.stream_id, piece[:window], end_stream=self.sent + window >= BIG)
            self.sent += window
        self.blocked = False


async def test_response_data_toward_a_client_that_never_reads_waits_upstream(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    """A client with huge windows that never reads: the proxy's buffer stays bounded and the
    backend is held back by the window the proxy does not reopen."""
    senders: list[_Sender] = []

    async def streaming_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        sender = _Sender(conn)
        senders.append(sender)
        writer.write(conn.data_to_send())
        with contextlib.suppress(ConnectionError, h2.exceptions.ProtocolError):
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        conn.send_headers(event.stream_id, [(":status", "200")])
                        sender.stream_id = event.stream_id
                sender.send_more()
                writer.write(conn.data_to_send())
                await writer.drain()

    proxy = await start_proxy(await tcp_server(streaming_backend))
    loop = asyncio.get_running_loop()
    sock = await _silent_client(proxy.outbound_addr.port)
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        _open_windows(conn)
        conn.send_headers(1, REQUEST, end_stream=True)
        await loop.sock_sendall(sock, conn.data_to_send())
        server = await _h2_server_of(proxy)
        await until(lambda: bool(senders), "the backend")
        sender = senders[0]

        def held_back() -> int:
            pair = server.pairs.get(1)
            return sum(len(d) for d, _ in pair.to_down.pending) if pair is not None else 0

        await until(lambda: sender.done or (sender.blocked and held_back() > 0), "a standstill")
        assert server.transport is not None
        buffered = server.transport.get_write_buffer_size()
        assert buffered < 1024 * 1024, buffered
        assert not sender.done
        # What waits inside the proxy is at most the stream window it advertised upstream.
        assert held_back() <= 1 << 20
    finally:
        sock.close()


async def test_request_data_toward_a_backend_that_never_reads_waits_at_the_client(
    start_proxy: StartProxy,
) -> None:
    """A backend with huge windows that stops reading: the proxy's buffer toward it stays
    bounded, and the client is held back by the window the proxy does not reopen."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    requests: list[int] = []

    async def deaf_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        _open_windows(conn)
        writer.write(conn.data_to_send())
        while not requests and (data := await reader.read(65536)):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    requests.append(event.stream_id)
            writer.write(conn.data_to_send())
        await asyncio.Event().wait()  # never reads again (cancelled at shutdown)

    backend = await asyncio.start_server(deaf_backend, sock=listener)
    proxy = await start_proxy(listener.getsockname())
    client = await RawH2Client.connect(proxy.outbound_addr.port)
    sender = _Sender(client.conn)
    try:
        client.conn.send_headers(1, [(":method", "POST"), *REQUEST[1:]])
        sender.stream_id = 1
        await client.send(client.conn.data_to_send())
        server = await _h2_server_of(proxy)
        await until(lambda: bool(requests), "the request upstream")

        def held_back() -> int:
            pair = server.pairs.get(1)
            return sum(len(d) for d, _ in pair.to_up.pending) if pair is not None else 0

        while not sender.done and not (sender.blocked and held_back() > 0):
            sender.send_more()
            await client.send(client.conn.data_to_send())
            if sender.blocked:
                # Wait for the proxy to reopen the window (or to hold the data back).
                before = client.conn.local_flow_control_window(1)

                def moved(before: int = before) -> bool:
                    return client.conn.local_flow_control_window(1) > before or held_back() > 0

                await until(moved, "a window update or a standstill")
        upstream = server.upstream
        assert upstream is not None
        assert upstream.transport is not None
        buffered = upstream.transport.get_write_buffer_size()
        assert buffered < 1024 * 1024, buffered
        assert not sender.done
        assert held_back() <= 1 << 20
    finally:
        client.close()
        backend.close()


async def test_control_frame_flood_from_a_backend_that_never_reads_is_bounded(
    start_proxy: StartProxy,
) -> None:
    """Upstreams are peers too: a backend pinging without reading the ACKs is not read."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    pinged: list[int] = []

    async def pinging_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        await reader.read(65536)  # the proxy's preface and first request; then never again
        chunk = PING * (65536 // len(PING))
        with contextlib.suppress(ConnectionError):
            for _ in range(16 * 1024 * 1024 // len(chunk)):
                writer.write(chunk)
                await writer.drain()
                pinged.append(len(chunk))
        writer.close()

    backend = await asyncio.start_server(pinging_backend, sock=listener)
    proxy = await start_proxy(listener.getsockname())
    client = await RawH2Client.connect(proxy.outbound_addr.port)
    try:
        server = await _h2_server_of(proxy)
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, REQUEST, end_stream=True)
        await client.send(client.conn.data_to_send())
        await until(lambda: server.upstream is not None, "the upstream connection")
        upstream = server.upstream
        assert upstream is not None
        transport: Any = upstream.transport
        peak = 0

        def settled() -> bool:
            nonlocal peak
            peak = max(peak, transport.get_write_buffer_size())
            stalled = transport.is_closing() or not transport.is_reading()
            return bool(stalled or sum(pinged) >= 16 * 1024 * 1024)

        await until(settled, "the ping flood to end")
        # The proxy stopped taking PINGs it owed ACKs for (and closed that connection if
        # the ACKs owed by then passed the limit).
        assert transport.is_closing() or not transport.is_reading()
        assert sum(pinged) < 16 * 1024 * 1024
        assert peak < 1024 * 1024, peak
    finally:
        client.close()
        backend.close()


async def test_empty_data_frames_queue_nothing(
    start_proxy: StartProxy, tcp_server: TcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Empty DATA frames (CVE-2019-9518) carry nothing, so nothing is kept for them."""
    backend = CountingH2Backend()
    proxy = await start_proxy(await tcp_server(backend.handle))
    connector = outbound_context(proxy).connector
    original = connector.open
    release = asyncio.Event()

    async def gated_open(*args: Any, **kwargs: Any) -> Any:
        await release.wait()  # the stream waits for its connection while the frames arrive
        return await original(*args, **kwargs)

    monkeypatch.setattr(connector, "open", gated_open)
    client = await RawH2Client.connect(proxy.outbound_addr.port)
    try:
        server = await _h2_server_of(proxy)
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, [(":method", "POST"), *REQUEST[1:]])
        await client.send(client.conn.data_to_send())
        await until(lambda: sid in server.pairs, "the stream")
        pair = server.pairs[sid]
        empty = _frame(0x0, 0, sid, b"")
        before = server.tcp.read.value
        for _ in range(20):  # 100,000 empty DATA frames
            await client.send(empty * 5000)
        await until(lambda: server.tcp.read.value - before >= 20 * 5000 * 9, "the frames")
        assert len(pair.to_up.pending) == 0
        release.set()
        client.conn.send_data(sid, b"body", end_stream=True)
        await client.send(client.conn.data_to_send())
        await until(lambda: sid in client.responses, "the response")
    finally:
        client.close()
    assert client.responses[sid] == 200
    assert backend.streams == 1
