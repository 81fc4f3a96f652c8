"""A hostile HTTP/1 upstream cannot grow the proxy's memory (issue #16).

Each upstream here answers with a response head (or interim heads, or trailers) that never
ends, writing until the proxy hangs up or it has written ``_CAP`` bytes, far beyond the
proxy's limits. The proxy must refuse the response (502 naming the limit, or an aborted
client connection once the response has started), abort the upstream connection, and so
stop reading long before the cap: an upstream that reaches its cap found a proxy that kept
on buffering.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator

import pytest
from gossamer_proxy.app import Proxy
from gossamer_proxy.config import Http1Limits
from gossamer_proxy.http1.headers import Headers, MessageInfo
from gossamer_proxy.http1.upstream import TOO_LARGE, Http1Upstream

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]

pytestmark = pytest.mark.timeout(60)

#: What an endless upstream writes at most: 32 times the default head limit (64 KiB).
_CAP = 2 * 1024 * 1024
_GET = b"GET / HTTP/1.1\r\nHost: svc.example\r\n\r\n"
#: A head-bytes limit beyond ``_CAP``, so that only the field limit can refuse.
_NO_BYTES_LIMIT = {"GOSSAMER_PROXY_HTTP1_MAX_HEAD_BYTES": str(64 * _CAP)}


class EndlessUpstream:
    """An upstream that writes ``head`` then ``pieces`` until the proxy hangs up or the cap."""

    def __init__(self, head: bytes, pieces: Callable[[], Iterator[bytes]]) -> None:
        self.head = head
        self.pieces = pieces
        self.written = 0
        self.reached_cap = False
        self.done = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A small send buffer keeps what the kernel holds for the proxy small, so the
        # bytes written track the bytes the proxy read.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(self.head)
            for piece in self.pieces():
                if self.written >= _CAP:
                    self.reached_cap = True
                    break
                writer.write(piece)
                self.written += len(piece)
                await writer.drain()
        except ConnectionError:
            pass  # the proxy hung up: what these tests want
        finally:
            writer.close()
            self.done.set()


def endless(piece: bytes) -> Callable[[], Iterator[bytes]]:
    def pieces() -> Iterator[bytes]:
        while True:
            yield piece

    return pieces


def _distinct_fields(prefix: bytes, per_piece: int = 512) -> Callable[[], Iterator[bytes]]:
    def pieces() -> Iterator[bytes]:
        n = 0
        while True:
            yield b"".join(b"%s-%d: v\r\n" % (prefix, i) for i in range(n, n + per_piece))
            n += per_piece

    return pieces


async def _final_response(
    reader: asyncio.StreamReader,
) -> tuple[int, dict[str, str], int]:
    """The first non-1xx response head (its status and headers) and how many 1xx preceded it."""
    interim = 0
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        if 100 <= status < 200:
            interim += 1
            continue
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return status, headers, interim


async def _refused_with_502(
    start_proxy: StartProxy, tcp_server: TcpServer, upstream: EndlessUpstream, **env: str
) -> str:
    """Send a GET through the proxy to ``upstream``; the 502's ``l5d-proxy-error``."""
    proxy = await start_proxy(await tcp_server(upstream), **env)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    try:
        writer.write(_GET)
        status, headers, _ = await asyncio.wait_for(_final_response(reader), 30)
        await asyncio.wait_for(upstream.done.wait(), 30)
    finally:
        writer.close()
    assert status == 502
    assert not upstream.reached_cap, f"the proxy read {upstream.written} bytes of one head"
    return headers["l5d-proxy-error"]


async def test_endless_header_fields_are_refused(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    upstream = EndlessUpstream(b"HTTP/1.1 200 OK\r\n", _distinct_fields(b"X-Field"))
    # Only the field limit can refuse this head (the bytes limit is out of reach).
    error = await _refused_with_502(start_proxy, tcp_server, upstream, **_NO_BYTES_LIMIT)
    assert error == "invalid HTTP response from server: too many header fields (over 128)"


async def test_endless_header_fields_are_refused_by_bytes_below_the_field_limit(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    # Fields of ~1 KiB each: 64 of them fill the head limit, far under this field limit.
    upstream = EndlessUpstream(b"HTTP/1.1 200 OK\r\n", _distinct_fields(b"X-" + b"f" * 1000, 16))
    error = await _refused_with_502(
        start_proxy, tcp_server, upstream, GOSSAMER_PROXY_HTTP1_MAX_HEADERS="100000"
    )
    assert error == "invalid HTTP response from server: response head over 65536 bytes"


async def test_a_header_value_that_never_ends_is_refused(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    upstream = EndlessUpstream(b"HTTP/1.1 200 OK\r\nX-Long: ", endless(b"a" * 8192))
    error = await _refused_with_502(start_proxy, tcp_server, upstream)
    assert error == "invalid HTTP response from server: response head over 65536 bytes"


async def test_endless_interim_heads_are_refused(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    upstream = EndlessUpstream(b"", endless(b"HTTP/1.1 100 Continue\r\n\r\n" * 256))
    error = await _refused_with_502(start_proxy, tcp_server, upstream)
    assert error == "invalid HTTP response from server: response head over 65536 bytes"


async def _aborted_after_the_body(
    start_proxy: StartProxy, tcp_server: TcpServer, upstream: EndlessUpstream, **env: str
) -> None:
    """The response started (200, a chunk): the client's connection is aborted, not ended."""
    proxy = await start_proxy(await tcp_server(upstream), **env)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    received = b""
    try:
        writer.write(_GET)
        with contextlib.suppress(ConnectionError):
            while chunk := await asyncio.wait_for(reader.read(65536), 30):
                received += chunk
        await asyncio.wait_for(upstream.done.wait(), 30)
    finally:
        writer.close()
    # Whatever of the response got through before the abort, it must not look complete.
    assert received == b"" or received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert not received.endswith(b"0\r\n\r\n"), "a refused response must not look complete"
    assert not upstream.reached_cap, f"the proxy read {upstream.written} bytes of trailers"


_CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"


async def test_endless_trailers_are_refused(start_proxy: StartProxy, tcp_server: TcpServer) -> None:
    upstream = EndlessUpstream(_CHUNKED_HEAD, _distinct_fields(b"X-Trailer"))
    await _aborted_after_the_body(start_proxy, tcp_server, upstream, **_NO_BYTES_LIMIT)


async def test_a_trailer_value_that_never_ends_is_refused(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    upstream = EndlessUpstream(_CHUNKED_HEAD + b"X-Trailer: ", endless(b"t" * 8192))
    await _aborted_after_the_body(start_proxy, tcp_server, upstream)


# -- no false positives ---------------------------------------------------------------------


async def _one_response(
    start_proxy: StartProxy, tcp_server: TcpServer, response: bytes
) -> tuple[int, dict[str, str], bytes]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response)  # one write: the head and body arrive in the same reads
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    proxy = await start_proxy(await tcp_server(handler))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    try:
        writer.write(_GET)
        status, headers, _ = await asyncio.wait_for(_final_response(reader), 30)
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 30)
    finally:
        writer.close()
    return status, headers, body


async def test_a_large_body_in_the_same_read_as_its_head_is_served(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    # A head just under the limit, behind an interim head, all in one write with the body.
    filler = b"X-Filler: " + b"f" * (60 * 1024) + b"\r\n"
    response = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\n" + filler + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    status, headers, received = await _one_response(start_proxy, tcp_server, response)
    assert status == 200
    assert len(headers["x-filler"]) == 60 * 1024
    assert received == body


@pytest.mark.parametrize("pipelined", [False, True])
async def test_a_response_nobody_asked_for_closes_the_connection(
    start_proxy: StartProxy, tcp_server: TcpServer, pipelined: bool
) -> None:
    """Bytes after a response, in its read, never reach the next request on that connection.

    The upstream answers the first request with two responses in one write, the second
    with a partial body. The next request must go out on a new connection and get its own
    answer, not the leftover (or a mix of the leftover and its own response). Pipelined,
    the next request already has the connection when the leftover is parsed (the first
    response's end hands it on): it must still get its own answer.
    """
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        n = connections
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                if n == 1:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
                        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nsmug"
                    )
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    proxy = await start_proxy(await tcp_server(handler))
    bodies = []
    for _ in range(1 if pipelined else 2):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
        try:
            writer.write(_GET * 2 if pipelined else _GET)
            for _ in range(2 if pipelined else 1):
                status, headers, _ = await asyncio.wait_for(_final_response(reader), 30)
                length = int(headers["content-length"])
                body = await asyncio.wait_for(reader.readexactly(length), 30)
                assert status == 200
                bodies.append(body)
        finally:
            writer.close()
    assert bodies == [b"first", b"second"]
    assert connections == 2


# -- one upstream connection, fed reads directly (exact read boundaries) ----------------------


class _Sink:
    """A :class:`ResponseSink` that records what it is told."""

    def __init__(self, on_end: Callable[[], None] | None = None) -> None:
        self.status: int | None = None
        self.body = b""
        self.ended = False
        self.lost: str | None = None
        self.on_end = on_end

    def up_head(self, status: int, reason: bytes, info: MessageInfo) -> None:
        self.status = status

    def up_body(self, data: bytes) -> None:
        self.body += data

    def up_end(self, trailers: Headers) -> None:
        self.ended = True
        if self.on_end is not None:
            self.on_end()

    def up_upgraded(self, leftover: bytes) -> None:
        raise AssertionError("no upgrade here")

    def up_lost(self, error: str) -> None:
        self.lost = error

    def up_flush(self) -> None:
        pass

    def up_pause_writing(self) -> None:
        pass

    def up_resume_writing(self) -> None:
        pass


class _Transport:
    def __init__(self) -> None:
        self.aborted = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.aborted

    def close(self) -> None:
        self.aborted = True

    def abort(self) -> None:
        self.aborted = True


def _upstream() -> tuple[Http1Upstream, _Transport]:
    up = Http1Upstream(("127.0.0.1", 80), None, Http1Limits())  # type: ignore[arg-type]
    transport = _Transport()
    up.connection_made(transport)  # type: ignore[arg-type]
    return up, transport


@pytest.mark.parametrize("split", [1, 2, 3])
def test_a_head_end_split_across_reads_before_a_large_body_is_served(split: int) -> None:
    """The blank line ending a head may arrive with a body larger than the room left."""
    body = b"x" * 100_000
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    up, transport = _upstream()
    sink = _Sink()
    up.begin(sink, no_body=False)
    up.data_received(head[:-split])
    up.data_received(head[-split:] + body)
    assert (sink.lost, sink.status, sink.ended) == (None, 200, True)
    assert sink.body == body
    assert up.is_usable()
    assert not transport.aborted


def test_a_head_past_the_limit_is_refused_when_its_end_follows_a_read_end() -> None:
    """A read may finish a head begun in the last, but not one longer than the limit."""
    up, transport = _upstream()
    sink = _Sink()
    up.begin(sink, no_body=False)
    up.data_received(b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 60_000 + b"\r\n")
    up.data_received(b"X-B: " + b"b" * 10_000 + b"\r\nContent-Length: 1\r\n\r\n" + b"x" * 20_000)
    assert sink.status is None
    assert sink.lost == TOO_LARGE + "response head over 65536 bytes"
    assert transport.aborted


def test_a_stray_response_never_reaches_the_exchange_handed_the_connection() -> None:
    """The pool may hand the connection on while the read that ended a response goes on."""
    up, transport = _upstream()
    second = _Sink()
    first = _Sink(on_end=lambda: up.begin(second, no_body=False))  # as a pipelined request
    up.begin(first, no_body=False)
    up.data_received(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsmug"
    )
    assert (first.status, first.body, first.ended, first.lost) == (200, b"first", True, None)
    assert (second.status, second.body) == (None, b"")
    assert second.lost == "invalid HTTP response: a response nobody asked for"
    assert transport.aborted
    assert not up.is_usable()
    assert not up.got_bytes  # so a request safe to send again is sent on a new connection
