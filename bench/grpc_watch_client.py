"""A lean reader of many gRPC server-streaming calls, for the destination fan-out benchmark.

    python -m bench.grpc_watch_client --port PORT --path web.ns.svc.cluster.local:80 \
        [--streams 1000] [--per-connection 100] [--nice 19]

opens the ``Get`` streams and prints a JSON line each time every stream has received one more
message: ``{"n": n, "first": ..., "last": ...}``, the arrival of the n-th message on the first
and on the last stream (``time.perf_counter`` seconds, comparable with the benchmark's own
stamps on the same host). On end of input it prints ``{"distinct_last": k, "valid": ...}``
(k is 1 when every stream holds the same last update) and exits. It runs as its own process,
standing in for proxies on other nodes, and once every stream has its first message it
lowers its priority (``--nice``): it then takes CPU from the path it measures as little as
possible, and the kernel's receive stamps make its own delays irrelevant.

Why not ``grpc.aio``: reading one message costs its client tens of microseconds (a task woken
through grpcio's completion queue per stream and message). For 1,000 streams in one Python
process that is 20 to 100 ms of serial client CPU per change, on the same two cores as the
apiserver and the destination, and it was counted as the destination's propagation time
(measured: the first stream had a change ~14 ms after the write, the last one ~38 ms, of which
the destination spent ~4 ms of CPU). A fleet of proxies reads its streams in parallel.

This client parses HTTP/2 itself and does only what a reader must: it sends the requests,
ACKs SETTINGS and PINGs (the server closes connections whose keepalive PINGs go unanswered),
keeps the flow-control windows open and cuts DATA into gRPC messages per stream. A message's
arrival is the kernel's receive timestamp of the read that completed it, so the client's own
scheduling (it shares the cores with what it measures) does not count. Headers and trailers
are decoded (HPACK) so a stream that ends reports its ``grpc-status``. :class:`WatchConnection`
is the sans-io part (bytes in, messages and reply bytes out); :class:`WatchSocket` drives it
on a socket.

References: RFC 9113 (§3.4 preface, §4.1 frame layout, §6 frame types, §6.9 flow control),
gRPC's PROTOCOL-HTTP2.md (length-prefixed messages, trailers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_WINDOW = 2**31 - 1
#: The largest gRPC message accepted (as ``grpc.max_receive_message_length`` was).
MAX_MESSAGE_BYTES = 64 << 20
#: Unacknowledged DATA bytes after which a WINDOW_UPDATE returns them (connection and stream).
REPLENISH_AT = 1 << 24

DATA, HEADERS, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x5, 0x6, 0x7
WINDOW_UPDATE, CONTINUATION = 0x8, 0x9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE = 0x2, 0x4
#: The largest frame this client accepts (its SETTINGS leave SETTINGS_MAX_FRAME_SIZE at this).
MAX_FRAME = 16_384


class ProtocolViolationError(Exception):
    """The server broke HTTP/2 or gRPC framing."""


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    header = len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big")
    return header + payload


def grpc_message(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


@dataclass(slots=True)
class StreamState:
    """What the reader keeps per stream: the message being cut, counts, how it ended."""

    buffer: bytearray = field(default_factory=bytearray)
    unacked: int = 0
    messages: int = 0
    last: bytes = b""
    ended: str | None = None


class WatchConnection:
    """The client side of one HTTP/2 connection carrying server-streaming gRPC calls (sans-io).

    :meth:`feed` takes received bytes and returns the ids of the streams that completed a
    message in them (one id per message); bytes owed to the server (ACKs, window updates)
    collect in :attr:`outbound` for the caller to send.
    """

    def __init__(self, authority: str) -> None:
        self.authority = authority.encode()
        self.streams: dict[int, StreamState] = {}
        self.outbound = bytearray(
            PREFACE
            + frame(
                SETTINGS,
                0,
                0,
                SETTINGS_ENABLE_PUSH.to_bytes(2, "big")
                + (0).to_bytes(4, "big")
                + SETTINGS_INITIAL_WINDOW_SIZE.to_bytes(2, "big")
                + MAX_WINDOW.to_bytes(4, "big"),
            )
            + frame(WINDOW_UPDATE, 0, 0, (MAX_WINDOW - 65_535).to_bytes(4, "big"))
        )
        self.goaway: str | None = None
        #: Streams that ended (trailers, reset or END_STREAM), with why, in order.
        self.ended: list[tuple[int, str]] = []
        self._next_id = 1
        self._buffer = b""
        self._unacked = 0
        self._encoder = hpack.Encoder()
        self._decoder = hpack.Decoder()
        self._header_block = bytearray()
        self._header_stream: int | None = None
        self._header_end_stream = False

    def open(self, path: str, message: bytes) -> int:
        """Starts a call of ``path`` with one request ``message``; its stream id."""
        stream_id = self._next_id
        self._next_id += 2
        block = self._encoder.encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", self.authority.decode()),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ]
        )
        self.outbound += frame(HEADERS, END_HEADERS, stream_id, block)
        self.outbound += frame(DATA, END_STREAM, stream_id, grpc_message(message))
        self.streams[stream_id] = StreamState()
        return stream_id

    def feed(self, data: bytes) -> list[int]:
        """Parses what arrived; the stream id of every message completed by it, in order."""
        buf = self._buffer + data if self._buffer else data
        completed: list[int] = []
        pos = 0
        size = len(buf)
        while size - pos >= 9:
            length = int.from_bytes(buf[pos : pos + 3], "big")
            if length > MAX_FRAME:
                raise ProtocolViolationError(f"frame of {length} bytes exceeds {MAX_FRAME}")
            end = pos + 9 + length
            if end > size:
                break
            kind = buf[pos + 3]
            flags = buf[pos + 4]
            stream_id = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFF_FFFF
            payload = buf[pos + 9 : end]
            pos = end
            if self._header_stream is not None and kind != CONTINUATION:
                raise ProtocolViolationError("header block interrupted")
            if kind == DATA:
                self._data(stream_id, flags, payload, completed)
            elif kind in (HEADERS, CONTINUATION):
                self._headers(kind, stream_id, flags, payload)
            elif kind == SETTINGS:
                if not flags & ACK:
                    self.outbound += frame(SETTINGS, ACK, 0)
            elif kind == PING:
                if not flags & ACK:
                    self.outbound += frame(PING, ACK, 0, payload)
            elif kind == RST_STREAM:
                self._end(stream_id, f"RST_STREAM {int.from_bytes(payload[:4], 'big')}")
            elif kind == GOAWAY:
                code = int.from_bytes(payload[4:8], "big")
                self.goaway = f"GOAWAY {code} {bytes(payload[8:200])!r}"
            elif kind == PUSH_PROMISE:
                raise ProtocolViolationError("PUSH_PROMISE although push is disabled")
            # WINDOW_UPDATE, PRIORITY and unknown frames need nothing (requests are sent).
        self._buffer = buf[pos:]
        return completed

    def _data(self, stream_id: int, flags: int, payload: bytes, completed: list[int]) -> None:
        flow = len(payload)
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise ProtocolViolationError("bad DATA padding")
            payload = payload[1 : len(payload) - payload[0]]
        self._unacked += flow
        if self._unacked >= REPLENISH_AT:
            self.outbound += frame(WINDOW_UPDATE, 0, 0, self._unacked.to_bytes(4, "big"))
            self._unacked = 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.ended is not None:
            return
        stream.unacked += flow
        if stream.unacked >= REPLENISH_AT:
            self.outbound += frame(WINDOW_UPDATE, 0, stream_id, stream.unacked.to_bytes(4, "big"))
            stream.unacked = 0
        pending = stream.buffer
        if not pending and len(payload) >= 5:
            # The common case: the frame holds whole messages, cut without copying twice.
            start = 0
            size = len(payload)
            while size - start >= 5:
                if payload[start] != 0:
                    raise ProtocolViolationError(f"compressed or bad message flag {payload[start]}")
                mlen = int.from_bytes(payload[start + 1 : start + 5], "big")
                if mlen > MAX_MESSAGE_BYTES:
                    raise ProtocolViolationError(f"message of {mlen} bytes")
                if start + 5 + mlen > size:
                    break
                stream.last = payload[start + 5 : start + 5 + mlen]
                stream.messages += 1
                completed.append(stream_id)
                start += 5 + mlen
            pending += payload[start:]
        else:
            pending += payload
            while len(pending) >= 5:
                if pending[0] != 0:
                    raise ProtocolViolationError(f"compressed or bad message flag {pending[0]}")
                mlen = int.from_bytes(pending[1:5], "big")
                if mlen > MAX_MESSAGE_BYTES:
                    raise ProtocolViolationError(f"message of {mlen} bytes")
                if len(pending) < 5 + mlen:
                    break
                stream.last = bytes(pending[5 : 5 + mlen])
                stream.messages += 1
                completed.append(stream_id)
                del pending[: 5 + mlen]
        if flags & END_STREAM:
            self._end(stream_id, "ended without trailers")

    def _headers(self, kind: int, stream_id: int, flags: int, payload: bytes) -> None:
        if kind == HEADERS:
            if flags & PADDED:
                if not payload or payload[0] >= len(payload):
                    raise ProtocolViolationError("bad HEADERS padding")
                payload = payload[1 : len(payload) - payload[0]]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            self._header_stream = stream_id
            self._header_end_stream = bool(flags & END_STREAM)
            self._header_block.clear()
        elif stream_id != self._header_stream:
            raise ProtocolViolationError("CONTINUATION without a header block")
        self._header_block += payload
        if len(self._header_block) > 1 << 20:
            raise ProtocolViolationError("header block too large")
        if not flags & END_HEADERS:
            return
        headers = dict(self._decoder.decode(bytes(self._header_block), raw=True))
        self._header_stream = None
        if self._header_end_stream:
            status = headers.get(b"grpc-status", b"?").decode(errors="replace")
            message = headers.get(b"grpc-message", b"").decode(errors="replace")
            self._end(stream_id, f"grpc-status {status} {message}".strip())

    def _end(self, stream_id: int, reason: str) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None and stream.ended is None:
            stream.ended = reason
            self.ended.append((stream_id, reason))


#: ``SO_TIMESTAMPNS`` (Linux; the same value as ``SCM_TIMESTAMPNS``): the kernel stamps each
#: received segment, and ``recvmsg`` hands back the stamp of the last one it read.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("qq")
READ_SIZE = 1 << 18


def kernel_arrival(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    """The receive timestamp in ``recvmsg``'s ancillary data, on ``time.perf_counter``'s clock
    (converted through the wall clock at this moment); ``None`` if there is none."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            stamp: float = seconds + nanoseconds / 1e9
            return stamp - (time.time() - time.perf_counter())
    return None


class WatchSocket:
    """Drives a :class:`WatchConnection` on a socket; calls ``on_messages(stream ids, arrival)``.

    The arrival time of the messages in a read is the kernel's receive timestamp of its last
    segment (``SO_TIMESTAMPNS``): when the update reached this client's socket, however late
    this process, which shares the cores with what it measures, gets round to reading it.
    Without a timestamp it is the time of the read.
    """

    def __init__(self, conn: WatchConnection, on_messages: Callable[[list[int], float], None]):
        self.conn = conn
        self.on_messages = on_messages
        self.error: str | None = None
        self.loop = asyncio.get_running_loop()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._unsent = b""
        self._open = False

    async def connect(self, host: str, port: int) -> None:
        await self.loop.sock_connect(self.sock, (host, port))
        self._open = True
        self.loop.add_reader(self.sock.fileno(), self._readable)
        self._send()

    def _send(self) -> None:
        if self.conn.outbound:
            self._unsent += bytes(self.conn.outbound)
            self.conn.outbound.clear()
        if not self._unsent or not self._open:
            return
        try:
            sent = self.sock.send(self._unsent)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._fail(f"send: {exc!r}")
            return
        self._unsent = self._unsent[sent:]
        if self._unsent:
            self.loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        self.loop.remove_writer(self.sock.fileno())
        self._send()

    def _readable(self) -> None:
        while self._open:
            try:
                data, ancdata, _, _ = self.sock.recvmsg(READ_SIZE, socket.CMSG_SPACE(16))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._fail(f"receive: {exc!r}")
                return
            if not data:
                self._fail("connection closed by the server")
                return
            arrived = kernel_arrival(ancdata)
            if arrived is None:
                arrived = time.perf_counter()
            try:
                completed = self.conn.feed(data)
            except ProtocolViolationError as exc:
                self._fail(str(exc))
                return
            if self.conn.outbound:
                self._send()
            if completed:
                self.on_messages(completed, arrived)

    def _fail(self, error: str) -> None:
        if self.error is None:
            self.error = error
        self.close()

    def close(self) -> None:
        if self._open:
            self._open = False
            self.loop.remove_reader(self.sock.fileno())
            self.loop.remove_writer(self.sock.fileno())
        self.sock.close()


GET_PATH = "/io.linkerd.proxy.destination.Destination/Get"


class StreamSet:
    """``count`` calls of one method with one request, ``per_connection`` to a connection.

    Reports through ``on_all(n)`` each time every stream has received its n-th message;
    :attr:`first_at` and :attr:`last_at` hold when the first and the last stream had it.
    """

    def __init__(self, count: int, per_connection: int, on_all: Callable[[int], None]) -> None:
        if count < 1 or per_connection < 1:
            raise ValueError("streams and streams per connection must be at least 1")
        self.count = count
        self.per_connection = per_connection
        self.on_all = on_all
        self.received = [0] * count
        self.reached: dict[int, int] = {}
        """How many streams have received their n-th message, by n (until all have)."""
        self.first_at: dict[int, float] = {}
        self.last_at: dict[int, float] = {}
        self.connections: list[tuple[WatchConnection, WatchSocket]] = []

    async def open(self, host: str, port: int, path: str, request: bytes) -> None:
        for base in range(0, self.count, self.per_connection):
            conn = WatchConnection(f"{host}:{port}")
            for _ in range(min(self.per_connection, self.count - base)):
                conn.open(path, request)
            reader = WatchSocket(conn, self._on_messages(base))
            self.connections.append((conn, reader))
            await reader.connect(host, port)

    def _on_messages(self, base: int) -> Callable[[list[int], float], None]:
        received, reached, first_at, last_at = (
            self.received,
            self.reached,
            self.first_at,
            self.last_at,
        )
        count = self.count

        def on_messages(stream_ids: list[int], arrived: float) -> None:
            for stream_id in stream_ids:
                i = base + (stream_id - 1) // 2
                n = received[i] = received[i] + 1
                have = reached.get(n, 0) + 1
                if have == 1:
                    first_at[n] = arrived
                if have == count:
                    del reached[n]
                    last_at[n] = arrived
                    self.on_all(n)
                else:
                    reached[n] = have

        return on_messages

    @property
    def errors(self) -> list[str]:
        out = []
        for conn, reader in self.connections:
            if conn.ended:
                stream_id, reason = conn.ended[0]
                out.append(f"stream {stream_id}: {reason}")
            if conn.goaway:
                out.append(conn.goaway)
            if reader.error:
                out.append(reader.error)
        return out

    def last_messages(self) -> set[bytes]:
        """The distinct last messages the streams hold (one when all are in step)."""
        return {bytes(s.last) for conn, _ in self.connections for s in conn.streams.values()}

    def close(self) -> None:
        for _, reader in self.connections:
            reader.close()


async def report(args: argparse.Namespace) -> int:
    """Runs the streams and prints what the module's docstring says; the exit status."""
    from gossamer_api.proxy import destination_pb2

    loop = asyncio.get_running_loop()

    def emit(line: dict[str, object]) -> None:
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    def on_all(n: int) -> None:
        if n == 1 and args.nice:
            # Subscribing (the first, large message) is timed at normal priority; the changes
            # after it are timed by the kernel's stamps, so this process can step aside.
            os.nice(args.nice)
        emit({"n": n, "first": streams.first_at.pop(n), "last": streams.last_at.pop(n)})

    streams = StreamSet(args.streams, args.per_connection, on_all)
    request = destination_pb2.GetDestination(path=args.path).SerializeToString()
    await streams.open(args.host, args.port, GET_PATH, request)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    ended = asyncio.ensure_future(stdin.read())
    while not ended.done():
        if streams.errors:
            emit({"error": streams.errors[0]})
            streams.close()
            return 1
        await asyncio.wait([ended], timeout=0.1)
    last = streams.last_messages()
    valid = True
    try:
        for message in last:
            destination_pb2.Update.FromString(message)
    except Exception:
        valid = False
    emit({"distinct_last": len(last), "valid": valid})
    streams.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True, help="the destination to Get")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--per-connection", type=int, default=100)
    parser.add_argument(
        "--nice", type=int, default=19, help="niceness added once every stream is subscribed"
    )
    args = parser.parse_args(argv)
    return asyncio.run(report(args))


if __name__ == "__main__":
    sys.exit(main())
