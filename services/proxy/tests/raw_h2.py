"""Raw HTTP/2 test peers for the proxy's loopback flood tests (shared by several files).

``RawH2Client`` speaks ``h2`` frames as an abusive (or careful) client would and keeps
reading, recording the GOAWAY it gets; ``CountingH2Backend`` answers every stream and
counts streams and connections; ``until`` polls a condition of the proxy, which runs on
the test's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from gossamer_proxy.app import Proxy
from gossamer_proxy.context import ListenerContext

__all__ = ["REQUEST", "CountingH2Backend", "RawH2Client", "outbound_context", "until"]

REQUEST = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "app")]


async def until(predicate: Callable[[], bool], what: str, *, limit: float = 20.0) -> None:
    """Poll ``predicate`` (the proxy runs on this loop) until true; fail after ``limit``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.005)


def outbound_context(proxy: Proxy) -> ListenerContext:
    return next(ctx for ctx in proxy.contexts if ctx.direction == "outbound")


class CountingH2Backend:
    """An h2 server that answers every stream with 200 and counts streams and connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.streams = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        with contextlib.suppress(ConnectionError, h2.exceptions.ProtocolError):
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        self.streams += 1
                        with contextlib.suppress(h2.exceptions.StreamClosedError):
                            conn.send_headers(event.stream_id, [(":status", "200")])
                            conn.send_data(event.stream_id, b"ok", end_stream=True)
                writer.write(conn.data_to_send())
                await writer.drain()
        writer.close()


class RawH2Client:
    """A raw h2 client that keeps reading, recording the GOAWAY it gets."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.responses: dict[int, int] = {}
        self.closed = False
        self.conn.initiate_connection()
        writer.write(self.conn.data_to_send())
        self._task = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, port: int) -> RawH2Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await self.reader.read(65536):
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    for event in self.conn.receive_data(data):
                        if isinstance(event, h2.events.ConnectionTerminated):
                            self.goaway = event
                        elif isinstance(event, h2.events.ResponseReceived):
                            status = dict(event.headers)[":status"]
                            self.responses[event.stream_id] = int(status)
        self.closed = True

    async def send(self, data: bytes) -> bool:
        """Send ``data``; False if the proxy had closed the connection."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except ConnectionError:
            return False
        return True

    def close(self) -> None:
        self._task.cancel()
        self.writer.close()
