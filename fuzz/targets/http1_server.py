"""The proxy's HTTP/1 server path, end to end in memory.

The client's bytes go into the listener's real accept protocol, which detects HTTP/1 and
hands the connection to :class:`gossamer_proxy.http1.server.Http1Server`; requests are
forwarded over in-memory upstream connections (:mod:`.proxy_world`) to a scripted backend
that answers with canned responses or with fuzzer bytes.

An input is a small program (see :func:`one_input`): client sends (single or repeated, to
flood), backend responses, either side reading its output or not (backpressure), EOFs and
resets, connect failures, time passing (``tick``) and drain. Afterwards the connection is
torn down.

Contract checked: no exception escapes a protocol callback or reaches the event loop, no
error-level log (the server's catch-all for its own bugs); the bytes the proxy keeps
(reachable from its protocol objects) stay below :data:`RETAINED_CAP` whatever the client
sends, and what it queued for a peer that does not read stays below :data:`OUTBOX_CAP`.
"""

from __future__ import annotations

from gossamer_proxy.config import Http1Limits

from ..harness import Target, Unbounded
from ..ops import Choices, Script
from .proxy_world import HIGH_WATER, MemoryTransport, World, retained_bytes

LIMITS = Http1Limits(max_head_bytes=4096, max_headers=32)
#: Two heads (one parsing, one forwarded), one read's worth of body waiting for an upstream,
#: and the framing around them. Whatever the client sends, the proxy must not hold more.
RETAINED_CAP = 2 * LIMITS.max_head_bytes + 4 * HIGH_WATER
#: What a writer may queue for a peer that stopped reading: up to the high-water mark, plus
#: what one delivered chunk can produce before the writer sees ``pause_writing``.
OUTBOX_CAP = 2 * HIGH_WATER + 64 * 1024

CANNED = (
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-t: 1\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nhi",
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\nclose-delimited body",
    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nok",
    b"garbage\r\n\r\n",
)

# Opcodes.
SEND, SEND_REPEAT, BACKEND_CANNED, BACKEND_BYTES, BACKEND_READ, CLIENT_READ = range(6)
CLIENT_EOF, BACKEND_EOF, BACKEND_RESET, CLIENT_RESET, TICK, DRAIN, FAIL_CONNECT = range(6, 13)
AUTO_ON, AUTO_OFF = 13, 14
OPCODES = 15


class Driver:
    def __init__(self, world: World, stream: bytes) -> None:
        self.world = world
        self.stream = stream
        self.pos = 0
        self.auto = True  # the backend answers every request head with CANNED[0]
        self.client_reads = True
        self.pending = b""  # client bytes not yet accepted (the proxy is not reading)

    def take_stream(self, size: int) -> bytes:
        chunk = self.stream[self.pos : self.pos + size] if size else self.stream[self.pos :]
        self.pos += len(chunk)
        return chunk

    async def send(self, data: bytes) -> None:
        self.pending += data
        await self.flush_client()

    async def flush_client(self) -> None:
        if self.pending and self.world.client.deliver(self.pending):
            self.pending = b""
        await self.world.settle()

    async def backend(self) -> None:
        """Auto mode: each upstream reads its input and answers every request line seen."""
        for up in self.world.connector.upstreams:
            if not self.auto or up.lost:
                continue
            data = up.take()
            heads = data.count(b" HTTP/1.1\r\n") + data.count(b" HTTP/1.0\r\n")
            for _ in range(heads):
                up.deliver(CANNED[0])
        await self.world.settle()

    def upstream(self, index: int) -> MemoryTransport | None:
        ups = [u for u in self.world.connector.upstreams if not u.lost]
        return ups[index % len(ups)] if ups else None

    async def step(self, op: int, choices: Choices) -> None:
        world = self.world
        if op == SEND:
            await self.send(self.take_stream(choices.u8()))
        elif op == SEND_REPEAT:
            chunk = self.take_stream(1 + choices.u8())
            for _ in range(1 + choices.u8()):
                await self.send(chunk)
                await self.backend()
                if self.pending:
                    break  # the proxy stopped reading: backpressure holds
        elif op in (BACKEND_CANNED, BACKEND_BYTES, BACKEND_READ, BACKEND_EOF, BACKEND_RESET):
            up = self.upstream(choices.u8())
            if up is None:
                return
            if op == BACKEND_CANNED:
                up.deliver(CANNED[choices.below(len(CANNED))])
            elif op == BACKEND_BYTES:
                up.deliver(self.take_stream(choices.u8()))
            elif op == BACKEND_READ:
                up.take(choices.u8() * 512 or None)
            elif op == BACKEND_EOF:
                up.deliver_eof()
            else:
                up.reset()
        elif op == CLIENT_READ:
            self.client_reads = choices.u8() & 1 == 0
        elif op == CLIENT_EOF:
            await self.flush_client()
            world.client.deliver_eof()
        elif op == CLIENT_RESET:
            world.client.reset()
        elif op == TICK:
            world.tick(choices.u8() * 0.5)
        elif op == DRAIN:
            world.drain()
        elif op == FAIL_CONNECT:
            world.connector.fail_next = choices.below(4)
        elif op == AUTO_ON:
            self.auto = True
        elif op == AUTO_OFF:
            self.auto = False
        await world.settle()
        await self.backend()
        if self.client_reads:
            world.client.take()
        await self.flush_client()


def check_bounds(world: World) -> int:
    held = retained_bytes(world.protocols())
    if held > RETAINED_CAP:
        raise Unbounded(f"proxy holds {held} bytes, cap {RETAINED_CAP}")
    for transport in world.transports():
        if transport.max_outbox > OUTBOX_CAP:
            raise Unbounded(f"{transport.max_outbox} bytes queued to a peer, cap {OUTBOX_CAP}")
    return held


def one_input(data: bytes) -> None:
    """``data`` = flags byte, ops (length-prefixed), then the byte stream ops draw from."""
    choices = Choices(data)
    flags = choices.u8()
    ops = Choices(choices.blob(1024))
    stream = choices.rest()

    async def script(world: World) -> None:
        driver = Driver(world, stream)
        steps = 0
        while ops.remaining and steps < 64:
            await driver.step(ops.below(OPCODES), ops)
            steps += 1
        await driver.send(driver.take_stream(0))  # whatever the ops did not send
        for _ in range(4):  # let pipelined requests and their responses finish
            await driver.backend()
            if driver.client_reads:
                world.client.take()
            await driver.flush_client()
        check_bounds(world)
        if flags & 2:
            world.client.deliver_eof()
            await driver.backend()

    World(inbound=bool(flags & 1), limits=LIMITS).play(script)


def program(flags: int, ops: list[int], stream: bytes) -> bytes:
    return Script().u8(flags).blob(bytes(ops), 1024).raw(stream).build()


def seeds() -> list[bytes]:
    get = b"GET /a HTTP/1.1\r\nHost: web:8080\r\n\r\n"
    post = b"POST /p HTTP/1.1\r\nHost: w\r\nContent-Length: 5\r\n\r\nhello"
    chunked = (
        b"PUT /c HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    upgrade = b"GET /ws HTTP/1.1\r\nHost: w\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    return [
        program(0, [], get),
        program(2, [], get + post + chunked),
        program(1, [], get + b"GET /b HTTP/1.0\r\n\r\n"),
        program(0, [AUTO_OFF, SEND, 0, BACKEND_CANNED, 0, 4], upgrade + b"frame"),
        program(
            0,
            [AUTO_OFF, SEND, 40, BACKEND_BYTES, 0, 30, CLIENT_EOF],
            post + b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
        ),
        program(0, [FAIL_CONNECT, 1, SEND, 0], get),
        program(0, [AUTO_OFF, SEND, 0, TICK, 30, DRAIN, BACKEND_CANNED, 0, 1], chunked),
        program(
            0,
            [AUTO_OFF, CLIENT_READ, 1, SEND_REPEAT, 200, 255],
            b"POST /big HTTP/1.1\r\nHost: w\r\nContent-Length: 999999\r\n\r\n" + b"x" * 200,
        ),
        program(0, [SEND, 10, TICK, 40, SEND, 0], get),
    ]


TARGET = Target(
    name="http1_server",
    one_input=one_input,
    seeds=seeds,
    max_len=4096,
    dictionary=(
        b" HTTP/1.1\r\n",
        b"\r\nHost: a",
        b"\r\nContent-Length: ",
        b"\r\n\r\n",
        b"\r\nTransfer-Encoding: chunked",
        b"\r\nConnection: ",
        b"Upgrade: websocket",
        b"Expect: 100-continue",
        b"0\r\n\r\n",
        b"l5d-dst-override: ",
        b"GET /",
    ),
)
