"""The proxy's HTTP/2 path with stateful frame sequences, end to end in memory.

The client's bytes go into the listener's real accept protocol, which detects the HTTP/2
preface and hands the connection to :class:`gossamer_proxy.http2.bridge.H2Server`; streams
are bridged over in-memory upstream connections (:mod:`.proxy_world`) to a backend that is
a real ``h2`` server state machine.

An input is a program of frame-level operations on both sides. The client side uses an
``h2`` client connection to produce well-formed, state-consistent frames (requests with
valid and invalid header sets, DATA within or beyond windows, trailers, RST_STREAM, PING,
SETTINGS, WINDOW_UPDATE, GOAWAY, PRIORITY) and can also inject raw frames of any type,
flags and stream id, CONTINUATION runs, and floods of repeated frames. The backend answers
(or not), resets, pings, sends GOAWAY, changes settings or sends raw frames; either peer can
stop reading (backpressure), half-close or reset its connection; time passes via ``tick``.

Contract checked: no exception escapes a protocol callback or reaches the event loop, no
error-level log; the bytes the proxy keeps stay below :data:`RETAINED_CAP` (derived from
the windows it advertises), and what it queues for a peer that does not read stays below
:data:`OUTBOX_CAP`.
"""

from __future__ import annotations

import contextlib
import struct

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from gossamer_proxy.config import Http1Limits

from ..harness import Target, Unbounded
from ..ops import Choices, Script
from .proxy_world import MemoryTransport, World, retained_bytes

#: The proxy advertises a 1 MiB stream window and a connection window of about 4 MiB
#: (``http2/bridge.py``); data is acknowledged only once forwarded, so each direction
#: buffers at most one connection window, plus ``h2``'s CONTINUATION backlog (64 frames of
#: 16 KiB) and header state.
CONNECTION_WINDOW = 65_535 + 4 * (1 << 20)
RETAINED_CAP = 2 * CONNECTION_WINDOW + 64 * 16_384 + 256 * 1024
#: Toward a peer that stopped reading, ``h2`` may queue what that peer's windows allow
#: (64 KiB by default), headers, and control frames (PING/SETTINGS acks) the peer provokes.
OUTBOX_CAP = 4 * 1024 * 1024

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GOOD_REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":authority", b"web:8080"),
    (b":path", b"/svc/Method"),
]
HEADER_SETS = (
    GOOD_REQUEST,
    [*GOOD_REQUEST, (b"content-type", b"application/grpc"), (b"te", b"trailers")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")],
    [(b":method", b"GET"), (b":path", b"/")],
    [*GOOD_REQUEST, (b"connection", b"close")],
    [*GOOD_REQUEST, (b"Upper", b"x")],
    [*GOOD_REQUEST, (b"te", b"gzip")],
    [(b":method", b"CONNECT"), (b":authority", b"web:443")],
    [*GOOD_REQUEST, (b"l5d-dst-override", b"x:1"), (b"host", b"other")],
    [*GOOD_REQUEST, (b":path", b"/again")],
    [*GOOD_REQUEST, (b"x-big", b"v" * 2000)],
    [(b":status", b"200")],
    [],
)
RESPONSE_SETS = (
    [(b":status", b"200")],
    [(b":status", b"200"), (b"content-type", b"application/grpc")],
    [(b":status", b"100")],
    [(b":status", b"503"), (b"content-length", b"0")],
    [(b":status", b"2000")],
    [(b":status", b"abc")],
    [(b"grpc-status", b"0")],
    [(b":status", b"204"), (b"connection", b"keep-alive")],
)
TRAILER_SETS = ([(b"grpc-status", b"0")], [(b"grpc-status", b"x")], [(b":path", b"/")], [])
SETTING_CODES = (1, 2, 3, 4, 5, 6, 8, 9, 0x10)
SETTING_VALUES = (0, 1, 100, 16_383, 16_384, 65_535, 65_536, 1 << 24, 2**31 - 1, 2**31, 2**32 - 1)
ERROR_CODES = (0, 1, 2, 3, 5, 7, 8, 11, 0xFF)

(
    REQUEST, DATA, TRAILERS, RESET, PING, SETTINGS, WINDOW_UPDATE, GOAWAY, PRIORITY, RAW,
    CONTINUATION_RUN, FLOOD, CLIENT_READ, CLIENT_EOF, CLIENT_RESET,
    B_RESPOND, B_DATA, B_TRAILERS, B_RESET, B_PING, B_GOAWAY, B_SETTINGS, B_WINDOW, B_RAW,
    B_READ, B_AUTO, B_CLOSE, TICK, DRAIN, FAIL_CONNECT,
) = range(30)  # fmt: skip
OPCODES = 30


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream_id & 0xFFFFFFFF)
        + payload
    )


class Peer:
    """One side's ``h2`` state machine, kept in step with what it receives."""

    def __init__(self, transport: MemoryTransport, *, client_side: bool) -> None:
        self.transport = transport
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=client_side, header_encoding=None)
        )
        self.conn.initiate_connection()
        self.synced = True  # False once this side's state machine gave up on the peer
        self.reading = True
        self.auto = True
        self.streams: list[int] = []
        self.requests: list[int] = []  # backend: streams with a request, not yet answered

    def outgoing(self) -> bytes:
        return self.conn.data_to_send()

    def act(self, action: object, *args: object, **kwargs: object) -> None:
        """Run an ``h2`` action; one its state machine refuses is simply skipped."""
        if not self.synced:
            return
        # The fuzzing peer's own state machine refusing an action is not a finding.
        with contextlib.suppress(Exception):
            action(*args, **kwargs)  # type: ignore[operator]

    def read(self) -> list[h2.events.Event]:
        """Read what the proxy sent (if reading) and let the state machine digest it."""
        if not self.reading:
            return []
        data = self.transport.take()
        if not data or not self.synced:
            return []
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.H2Error:
            self.synced = False  # e.g. after raw frames this side did not track
            return []
        for event in events:
            if isinstance(event, h2.events.DataReceived) and event.flow_controlled_length:
                self.act(
                    self.conn.acknowledge_received_data,
                    event.flow_controlled_length,
                    event.stream_id,
                )
            if isinstance(event, h2.events.RequestReceived):
                self.requests.append(event.stream_id)
                self.streams.append(event.stream_id)
        return events

    def next_stream(self) -> int:
        try:
            return int(self.conn.get_next_available_stream_id())
        except h2.exceptions.NoAvailableStreamIDError:
            return 1

    def stream(self, choices: Choices) -> int:
        roll = choices.u8()
        if roll < 200 and self.streams:
            return self.streams[roll % len(self.streams)]
        return (0, 1, 2, 3, 5, 0x7FFFFFFF, 101)[roll % 7]


class Driver:
    def __init__(self, world: World, stream: bytes) -> None:
        self.world = world
        self.bytes = stream
        self.pos = 0
        self.client = Peer(world.client, client_side=True)
        self.backends: dict[int, Peer] = {}
        self.backend_auto = True
        self.backend_reading = True
        self.flooded = False
        self.pending = b""  # the client's preface + SETTINGS go out with the first send()

    def take(self, size: int) -> bytes:
        chunk = self.bytes[self.pos : self.pos + size]
        self.pos += len(chunk)
        return chunk

    async def send(self, data: bytes = b"") -> None:
        self.pending += data + self.client.outgoing()
        if self.pending and self.world.client.deliver(self.pending):
            self.pending = b""
        await self.world.settle()

    def backend_peers(self) -> list[Peer]:
        for index, transport in enumerate(self.world.connector.upstreams):
            if index not in self.backends:
                peer = Peer(transport, client_side=False)
                peer.auto = self.backend_auto
                self.backends[index] = peer
        return [p for i, p in sorted(self.backends.items()) if not p.transport.lost]

    async def pump(self) -> None:
        """Both peers read what the proxy sent; the auto backend answers requests."""
        for _ in range(3):
            if not any(t.outbox for t in self.world.transports()) and not self.pending:
                return
            for backend in self.backend_peers():
                backend.reading = self.backend_reading
                backend.read()
                if backend.auto and backend.synced:
                    for sid in backend.requests:
                        backend.act(backend.conn.send_headers, sid, RESPONSE_SETS[0])
                        backend.act(backend.conn.send_data, sid, b"ok", end_stream=True)
                    backend.requests.clear()
                out = backend.outgoing()
                if out:
                    backend.transport.deliver(out)
            self.client.read()
            await self.send()

    def backend(self, choices: Choices) -> Peer | None:
        peers = self.backend_peers()
        return peers[choices.u8() % len(peers)] if peers else None

    async def step(self, op: int, choices: Choices) -> None:
        client = self.client
        conn = client.conn
        if op == REQUEST:
            sid = client.next_stream() if choices.u8() < 220 else client.stream(choices)
            headers = HEADER_SETS[choices.below(len(HEADER_SETS))]
            end = choices.u8() & 1 == 1
            if choices.u8() < 230:
                client.act(conn.send_headers, sid, headers, end_stream=end)
                client.streams.append(sid)
            else:  # bypass the client's own validation
                block = conn.encoder.encode(headers)
                await self.send(frame(1, 0x04 | (1 if end else 0), sid, block))
        elif op == DATA:
            body = self.take(choices.u8() * 64)
            client.act(
                conn.send_data, client.stream(choices), body, end_stream=choices.u8() & 1 == 1
            )
        elif op == TRAILERS:
            trailers = TRAILER_SETS[choices.below(len(TRAILER_SETS))]
            client.act(conn.send_headers, client.stream(choices), trailers, end_stream=True)
        elif op == RESET:
            code = ERROR_CODES[choices.below(len(ERROR_CODES))]
            client.act(conn.reset_stream, client.stream(choices), code)
        elif op == PING:
            if choices.u8() & 1:
                client.act(conn.ping, self.take(8).ljust(8, b"\0"))
            else:
                await self.send(frame(6, 1, 0, self.take(8).ljust(8, b"\0")))
        elif op == SETTINGS:
            code = SETTING_CODES[choices.below(len(SETTING_CODES))]
            value = SETTING_VALUES[choices.below(len(SETTING_VALUES))]
            if choices.u8() < 128:
                client.act(conn.update_settings, {code: value})
            else:
                await self.send(frame(4, choices.u8() & 1, 0, struct.pack(">HI", code, value)))
        elif op == WINDOW_UPDATE:
            increment = (0, 1, 65_535, 1 << 20, 2**31 - 1, 2**31)[choices.below(6)]
            await self.send(frame(8, 0, client.stream(choices), struct.pack(">I", increment)))
        elif op == GOAWAY:
            last = client.stream(choices)
            code = ERROR_CODES[choices.below(len(ERROR_CODES))]
            await self.send(
                frame(7, 0, 0, struct.pack(">II", last, code) + self.take(choices.u8() % 16))
            )
        elif op == PRIORITY:
            await self.send(
                frame(
                    2,
                    0,
                    client.stream(choices),
                    struct.pack(">IB", client.stream(choices), choices.u8()),
                )
            )
        elif op == RAW:
            kind, flags = choices.u8() % 12, choices.u8()
            await self.send(frame(kind, flags, client.stream(choices), self.take(choices.u8())))
        elif op == CONTINUATION_RUN:
            sid = client.next_stream()
            block = conn.encoder.encode(GOOD_REQUEST)
            out = frame(1, 0, sid, block[:3])
            rest = block[3:]
            for _ in range(choices.u8()):
                out += frame(9, 0, sid, self.take(choices.u8()) or b"\x82")
            out += frame(9, 4, sid, rest)
            await self.send(out)
        elif op == FLOOD:
            kind = choices.below(4)
            sid = client.stream(choices)
            unit = (
                frame(0, 0, sid, b"x" * 16_000),  # DATA beyond any window
                frame(6, 0, 0, b"12345678"),  # PING
                frame(4, 0, 0, b""),  # SETTINGS
                frame(1, 5, sid, b"\x82\x86\x84\x41\x01a") + frame(3, 0, sid, b"\0\0\0\x08"),
            )[kind]
            self.flooded = True
            for _ in range(1 + choices.u8()):
                await self.send(unit)
                if self.pending:
                    break  # the proxy stopped reading
                self.client.read()
        elif op == CLIENT_READ:
            client.reading = choices.u8() & 1 == 0
        elif op == CLIENT_EOF:
            await self.send()
            self.world.client.deliver_eof()
        elif op == CLIENT_RESET:
            self.world.client.reset()
        elif op in (
            B_RESPOND,
            B_DATA,
            B_TRAILERS,
            B_RESET,
            B_PING,
            B_GOAWAY,
            B_SETTINGS,
            B_WINDOW,
            B_RAW,
            B_CLOSE,
        ):
            await self.backend_step(op, choices)
        elif op == B_READ:
            self.backend_reading = choices.u8() & 1 == 0
        elif op == B_AUTO:
            self.backend_auto = choices.u8() & 1 == 0
            for peer in self.backends.values():
                peer.auto = self.backend_auto
        elif op == TICK:
            self.world.tick(choices.u8() * 0.5)
        elif op == DRAIN:
            self.world.drain()
        elif op == FAIL_CONNECT:
            self.world.connector.fail_next = choices.below(4)
        await self.send()
        await self.pump()

    async def backend_step(self, op: int, choices: Choices) -> None:
        peer = self.backend(choices)
        if peer is None:
            return
        conn = peer.conn
        sid = peer.stream(choices)
        if op == B_RESPOND:
            headers = RESPONSE_SETS[choices.below(len(RESPONSE_SETS))]
            peer.act(conn.send_headers, sid, headers, end_stream=choices.u8() & 1 == 1)
        elif op == B_DATA:
            peer.act(
                conn.send_data, sid, self.take(choices.u8() * 64), end_stream=choices.u8() & 1 == 1
            )
        elif op == B_TRAILERS:
            peer.act(
                conn.send_headers,
                sid,
                TRAILER_SETS[choices.below(len(TRAILER_SETS))],
                end_stream=True,
            )
        elif op == B_RESET:
            peer.act(conn.reset_stream, sid, ERROR_CODES[choices.below(len(ERROR_CODES))])
        elif op == B_PING:
            peer.act(conn.ping, b"pingpong")
        elif op == B_GOAWAY:
            peer.act(
                conn.close_connection,
                ERROR_CODES[choices.below(len(ERROR_CODES))],
                last_stream_id=sid,
            )
        elif op == B_SETTINGS:
            code = SETTING_CODES[choices.below(len(SETTING_CODES))]
            peer.act(
                conn.update_settings, {code: SETTING_VALUES[choices.below(len(SETTING_VALUES))]}
            )
        elif op == B_WINDOW:
            peer.act(
                conn.increment_flow_control_window,
                (1, 65_535, 1 << 20)[choices.below(3)],
                sid or None,
            )
        elif op == B_RAW:
            data = peer.outgoing() + frame(
                choices.u8() % 12, choices.u8(), sid, self.take(choices.u8())
            )
            peer.transport.deliver(data)
            return
        elif op == B_CLOSE:
            if choices.u8() & 1:
                peer.transport.deliver(peer.outgoing())
                peer.transport.deliver_eof()
            else:
                peer.transport.reset()
            return
        out = peer.outgoing()
        if out:
            peer.transport.deliver(out)


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
        await driver.send()
        steps = 0
        while ops.remaining and steps < 64:
            await driver.step(ops.below(OPCODES), ops)
            steps += 1
        await driver.pump()
        if driver.flooded or flags & 0x0C == 0:  # the walk is costly: floods, and 1 in 4
            check_bounds(world)
        if flags & 2:
            world.client.deliver_eof()
            await driver.pump()

    World(inbound=bool(flags & 1), limits=Http1Limits()).play(script)


def program(flags: int, ops: list[int], stream: bytes = b"") -> bytes:
    return Script().u8(flags).blob(bytes(ops), 1024).raw(stream).build()


def seeds() -> list[bytes]:
    return [
        program(0, [REQUEST, 0, 0, 1, 0]),
        program(1, [REQUEST, 0, 1, 0, 0, DATA, 2, 0, 1, TRAILERS, 0, 0]),
        program(
            0,
            [
                B_AUTO,
                1,
                REQUEST,
                0,
                0,
                0,
                0,
                B_RESPOND,
                0,
                0,
                1,
                0,
                B_DATA,
                0,
                0,
                1,
                0,
                B_TRAILERS,
                0,
                0,
                0,
            ],
            b"z" * 64,
        ),
        program(
            0,
            [
                REQUEST,
                0,
                0,
                0,
                0,
                RESET,
                0,
                8,
                PING,
                1,
                SETTINGS,
                1,
                5,
                0,
                WINDOW_UPDATE,
                2,
                0,
                GOAWAY,
                0,
                0,
                0,
            ],
        ),
        program(0, [B_READ, 1, REQUEST, 0, 0, 0, 0, FLOOD, 0, 0, 200]),
        program(0, [CONTINUATION_RUN, 60, 200], b"a" * 4000),
        program(0, [B_AUTO, 1, REQUEST, 0, 0, 1, 0, B_GOAWAY, 0, 0, 0, REQUEST, 0, 0, 1, 0]),
        program(2, [FAIL_CONNECT, 1, REQUEST, 0, 1, 1, 0, TICK, 200, DRAIN]),
        program(0, [REQUEST, 0, 0, 1, 0, B_CLOSE, 0, 0, 0, REQUEST, 0, 0, 1, 0]),
        program(
            0,
            [
                CLIENT_READ,
                1,
                B_AUTO,
                1,
                REQUEST,
                0,
                0,
                0,
                0,
                B_DATA,
                0,
                0,
                255,
                0,
                B_DATA,
                0,
                0,
                255,
                0,
            ],
            b"d" * 16000,
        ),
    ]


TARGET = Target(
    name="http2_frames",
    one_input=one_input,
    seeds=seeds,
    max_len=8192,
)
