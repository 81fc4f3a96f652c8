"""Opaque TCP forwarding: a bidirectional copy with half-close and backpressure.

Two implementations share the same semantics:

* :class:`RelayProtocol` pairs two asyncio transports. Each side writes what it reads into the
  other; when a side's write buffer passes its high-water mark the *other* side stops
  reading, so a slow peer never makes the proxy buffer without bound. EOF from one side
  becomes a ``shutdown(SHUT_WR)`` on the other (half-close), and the pair closes once both
  directions have ended. Used for upgraded HTTP connections and for anything behind TLS.
* :class:`SpliceRelay` moves bytes socket → pipe → socket with ``os.splice``, so payloads
  never enter Python. Used for plaintext opaque connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
from collections.abc import Callable
from typing import cast

from .halfclose import can_stay_half_open
from .metrics import TcpStats

__all__ = ["PausedProtocol", "RelayProtocol", "SpliceRelay", "relay_transports"]

_SPLICE_CHUNK = 1 << 16
_LINGER_RESET = struct.pack("ii", 1, 0)  # close() sends RST: propagate an abort
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


class RelayProtocol(asyncio.Protocol):
    """One side of a transport pair; forwards what it reads to ``peer``."""

    __slots__ = ("_done", "_eof", "_stats_in", "_stats_out", "peer", "peer_protocol", "transport")

    def __init__(self, stats_in: TcpStats | None = None, stats_out: TcpStats | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: asyncio.Transport | None = None
        self.peer_protocol: RelayProtocol | None = None
        self._eof = False
        self._done: Callable[[], None] | None = None
        self._stats_in = stats_in
        self._stats_out = stats_out

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop transports are not subclasses

    def data_received(self, data: bytes) -> None:
        if self._stats_in is not None:
            self._stats_in.read.value += len(data)
        if self._stats_out is not None:
            self._stats_out.written.value += len(data)
        peer = self.peer
        if peer is not None and not peer.is_closing():
            peer.write(data)

    def eof_received(self) -> bool:
        self._eof = True
        peer = self.peer
        other = self.peer_protocol
        if other is not None and other._eof:
            self._close_both()
            return False
        if peer is not None and not peer.is_closing():
            if peer.can_write_eof():
                peer.write_eof()
            else:
                peer.close()  # a TLS peer cannot be half-closed: closing is its EOF
        # Plain TCP stays half-open for the other direction. TLS closes now (see halfclose);
        # connection_lost then closes the peer once what it was given is flushed.
        return can_stay_half_open(self.transport)

    def replay(self, held: PausedProtocol) -> None:
        """Pass on what ``held`` received before the relay adopted its transport."""
        if held.early:
            self.data_received(bytes(held.early))
            held.early.clear()
        if held.eof:
            self.eof_received()

    def mark_eof(self) -> None:
        """Record an EOF from this side that was already passed on before the relay began."""
        self._eof = True

    def pause_writing(self) -> None:
        # Our transport is backed up: stop reading from the side that feeds it.
        if self.peer is not None and not self.peer.is_closing():
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and not self.peer.is_closing():
            self.peer.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        if peer is not None and not peer.is_closing():
            if exc is None:
                peer.close()
            else:
                peer.abort()
        if self._done is not None:
            done, self._done = self._done, None
            done()

    def _close_both(self) -> None:
        for transport in (self.transport, self.peer):
            if transport is not None and not transport.is_closing():
                transport.close()


class PausedProtocol(asyncio.Protocol):
    """Holds a fresh connection silent until :func:`relay_transports` adopts it.

    What arrives anyway is kept for the relay (:meth:`RelayProtocol.replay`): a peer that
    speaks first may have been read before the pause took effect (uvloop reads a transport
    made from a connected socket at once), or during a connect's hand-over. That is at
    most one read and what the hand-over held, since reading stays paused.
    """

    def __init__(self) -> None:
        self.early = bytearray()
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).pause_reading()

    def data_received(self, data: bytes) -> None:
        self.early += data

    def eof_received(self) -> bool:
        self.eof = True
        return True  # the relay decides; a TLS transport closes itself whatever is returned


def relay_transports(
    downstream: asyncio.Transport,
    upstream: asyncio.Transport,
    *,
    to_upstream: bytes = b"",
    to_downstream: bytes = b"",
    downstream_stats: TcpStats | None = None,
    upstream_stats: TcpStats | None = None,
    on_closed: Callable[[], None] | None = None,
) -> tuple[RelayProtocol, RelayProtocol]:
    """Join two live transports into an opaque relay, first flushing bytes already read.

    Both transports get fresh :class:`RelayProtocol` instances; ``on_closed`` runs once,
    when the downstream side is gone.
    """
    down = RelayProtocol(downstream_stats, upstream_stats)
    up = RelayProtocol(upstream_stats, downstream_stats)
    down.transport, down.peer, down.peer_protocol = downstream, upstream, up
    up.transport, up.peer, up.peer_protocol = upstream, downstream, down
    down._done = on_closed
    downstream.set_protocol(down)
    upstream.set_protocol(up)
    if to_upstream:
        upstream.write(to_upstream)
    if to_downstream:
        downstream.write(to_downstream)
    downstream.resume_reading()
    upstream.resume_reading()
    return down, up


class _Pump:
    """One direction of a splice relay: ``src`` → pipe → ``dst``."""

    __slots__ = ("dst", "eof", "pending", "pipe_r", "pipe_w", "src", "stats_in", "stats_out")

    def __init__(self, src: int, dst: int, stats_in: TcpStats | None, stats_out: TcpStats | None):
        self.src = src
        self.dst = dst
        self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pending = 0  # bytes sitting in the pipe
        self.eof = False
        self.stats_in = stats_in
        self.stats_out = stats_out

    def close(self) -> None:
        for fd in (self.pipe_r, self.pipe_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class SpliceRelay:
    """Zero-copy bidirectional relay between two connected non-blocking sockets.

    Takes ownership of both sockets. Each direction alternates between waiting for its
    source to be readable (pipe empty) and for its destination to be writable (pipe
    non-empty), which is exactly the backpressure of the copy: a slow reader stops the
    splice from its writer.
    """

    def __init__(
        self,
        a: socket.socket,
        b: socket.socket,
        *,
        a_stats: TcpStats | None = None,
        b_stats: TcpStats | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._a = a
        self._b = b
        self._pumps = (
            _Pump(a.fileno(), b.fileno(), a_stats, b_stats),
            _Pump(b.fileno(), a.fileno(), b_stats, a_stats),
        )
        self._closed = False
        self.error = 0
        self.done: asyncio.Future[None] = self._loop.create_future()

    def start(self, *, a_eof: bool = False) -> None:
        """Begin copying; ``a_eof`` if side ``a`` already half-closed (pass that on)."""
        first, second = self._pumps
        if a_eof:
            first.eof = True
            self._shutdown_dst(first)
        else:
            self._loop.add_reader(first.src, self._readable, first)
        self._loop.add_reader(second.src, self._readable, second)

    def _readable(self, pump: _Pump) -> None:
        try:
            n = os.splice(pump.src, pump.pipe_w, _SPLICE_CHUNK, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(exc)
            return
        if n == 0:
            pump.eof = True
            self._loop.remove_reader(pump.src)
            self._shutdown_dst(pump)
            return
        pump.pending += n
        if pump.stats_in is not None:
            pump.stats_in.read.value += n
        self._drain(pump)

    def _drain(self, pump: _Pump) -> None:
        while pump.pending:
            try:
                n = os.splice(pump.pipe_r, pump.dst, pump.pending, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                # Destination is full: stop reading the source until it drains.
                self._loop.remove_reader(pump.src)
                self._loop.add_writer(pump.dst, self._writable, pump)
                return
            except OSError as exc:
                self._fail(exc)
                return
            pump.pending -= n
            if pump.stats_out is not None:
                pump.stats_out.written.value += n

    def _writable(self, pump: _Pump) -> None:
        self._drain(pump)
        if self._closed or pump.pending:
            return
        self._loop.remove_writer(pump.dst)
        if pump.eof:
            self._shutdown_dst(pump)
        else:
            self._loop.add_reader(pump.src, self._readable, pump)

    def _shutdown_dst(self, pump: _Pump) -> None:
        if pump.pending:
            return  # _writable finishes the half-close once the pipe is empty
        sock = self._b if pump is self._pumps[0] else self._a
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        if all(p.eof and not p.pending for p in self._pumps):
            self.close()

    def _fail(self, exc: OSError) -> None:
        # A reset or broken pipe on one side is passed on as a reset on the other.
        self.error = exc.errno or errno.EIO
        self.close(abort=True)

    def close(self, abort: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        for pump in self._pumps:
            self._loop.remove_reader(pump.src)
            self._loop.remove_writer(pump.dst)
            pump.close()
        for sock in (self._a, self._b):
            if abort:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            sock.close()
        if not self.done.done():
            self.done.set_result(None)
