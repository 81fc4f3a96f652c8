"""Accepted connections: find the target, detect the protocol, hand off to a handler.

Every connection a listener accepts starts here. Its original destination is read once;
connections that would loop back into the proxy are refused. Opaque ports skip detection
entirely, so server-speaks-first protocols (MySQL, SMTP) are connected at once. Otherwise
the first bytes choose HTTP/2, HTTP/1 or opaque (:mod:`gossamer_proxy.detect`); a client that
stays silent for the detect timeout is forwarded as opaque TCP.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Final, cast

import structlog

from .config import Endpoint
from .connect import is_loop, original_destination, set_nodelay
from .context import ListenerContext
from .detect import DETECT_BUFFER_LIMIT, Protocol, detect
from .errors import ProxyError
from .http1.server import Http1Server
from .http2.bridge import H2Server
from .metrics import TargetLabels, TcpStats
from .opaque import PausedProtocol, SpliceRelay, relay_transports

__all__ = ["AcceptedConnection"]

_log = structlog.get_logger("gossamer.proxy")
_DETECT_MAX: Final = DETECT_BUFFER_LIMIT


class AcceptedConnection(asyncio.Protocol):
    """A connection before its protocol is known (then it hands itself over)."""

    __slots__ = (
        "_buffer",
        "_done",
        "_eof",
        "_timer",
        "ctx",
        "labels",
        "target",
        "tcp",
        "transport",
    )

    def __init__(self, ctx: ListenerContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None
        self._done = False
        self._eof = False
        self.target = Endpoint("0.0.0.0", 0)  # noqa: S104 - placeholder until connection_made
        self.labels: TargetLabels | None = None
        self.tcp: TcpStats | None = None

    # -- accept ------------------------------------------------------------------------------

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)  # uvloop transports are not subclasses
        self.transport = transport
        ctx = self.ctx
        set_nodelay(transport)
        if ctx.draining:
            transport.abort()
            return
        sockname = transport.get_extra_info("sockname")
        local = Endpoint(str(sockname[0]), int(sockname[1]))
        target = original_destination(transport)
        if ctx.fixed_target is not None:
            target = ctx.fixed_target
        elif is_loop(target, ctx.listen, local):
            # Either nobody redirected this connection (a client dialled the listener
            # directly) or the target is the proxy itself: forwarding would loop.
            _log.info("connection_refused_loop", direction=ctx.direction, target=str(target))
            transport.abort()
            return
        elif ctx.allowed_ips and target.host not in ctx.allowed_ips:
            # LINKERD2_PROXY_INBOUND_IPS: only the pod's own addresses are served.
            _log.info("connection_refused_foreign_ip", target=str(target))
            transport.abort()
            return
        self.target = target
        self.labels = TargetLabels(ctx.direction, target.host, target.port, ctx.inbound)
        self.tcp = ctx.metrics.tcp(self.labels, "src")
        self.tcp.open()
        ctx.connections.add(self)
        if target.port in ctx.opaque_ports:
            self._go_opaque()
            return
        self._timer = asyncio.get_running_loop().call_later(ctx.detect_timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        if self.tcp is not None:
            self.tcp.read.value += len(data)
        self._buffer += data
        self._decide(detect(self._buffer))

    def eof_received(self) -> bool:
        self._eof = True
        if not self._done:
            self._decide(detect(self._buffer, eof=True))
        return True  # the handler decides when to close

    # -- housekeeping (while detecting) -----------------------------------------------------------

    def tick(self, now: float) -> None:
        pass  # the detect timer bounds this phase

    def is_idle(self) -> bool:
        return True

    def drain(self) -> None:
        """Shutting down: a connection that has not sent a request yet is simply closed."""
        if not self._done and self.transport is not None:
            self._cancel_timer()
            self.transport.close()  # connection_lost settles the metrics

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.connections.discard(self)
        if not self._done:
            self._done = True
            self._cancel_timer()
            if self.tcp is not None:
                self.tcp.close(getattr(exc, "errno", 0) or 0 if exc else 0)

    def _timed_out(self) -> None:
        self._timer = None
        if not self._done:
            self._decide(Protocol.OPAQUE)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- hand-off ----------------------------------------------------------------------------

    def _decide(self, protocol: Protocol | None) -> None:
        if protocol is None:
            if len(self._buffer) < _DETECT_MAX:
                return
            protocol = Protocol.OPAQUE
        self.ctx.connections.discard(self)
        self._done = True
        self._cancel_timer()
        transport = self.transport
        assert transport is not None
        assert self.labels is not None
        assert self.tcp is not None
        transport.pause_reading()
        # Bytes were counted here already; the handler counts from now on.
        initial, self._buffer = self._buffer, b""
        self.tcp.read.value -= len(initial)
        if protocol is Protocol.HTTP1:
            server = Http1Server(self.ctx, self.target, self.labels, self.tcp)
            server.start(transport, initial, eof=self._eof)
        elif protocol is Protocol.HTTP2:
            h2_server = H2Server(self.ctx, self.target, self.labels, self.tcp)
            h2_server.start(transport, initial, eof=self._eof)
        else:
            self.tcp.read.value += len(initial)
            self._go_opaque(initial)

    def _endpoint(self) -> Endpoint:
        ctx = self.ctx
        if ctx.fixed_target is not None:
            return ctx.fixed_target
        if ctx.forward_host is not None:
            return Endpoint(ctx.forward_host, self.target.port)
        return ctx.resolver.resolve(self.target, None)[0]

    def _go_opaque(self, initial: bytes = b"") -> None:
        self.ctx.connections.discard(self)
        self._done = True
        self._cancel_timer()
        transport = self.transport
        assert transport is not None
        transport.pause_reading()
        self.ctx.spawn(self._opaque(transport, initial))

    async def _opaque(self, transport: asyncio.Transport, initial: bytes) -> None:
        ctx = self.ctx
        assert self.labels is not None
        assert self.tcp is not None
        endpoint = self._endpoint()
        dst = ctx.metrics.tcp(self.labels, "dst")
        src = self.tcp
        sock = transport.get_extra_info("socket")
        use_splice = ctx.splice and sock is not None and hasattr(os, "splice")
        try:
            if use_splice:
                upstream_sock = await ctx.connector.open_socket(endpoint)
            else:
                up_transport, _ = await ctx.connector.open(endpoint, PausedProtocol)
        except ProxyError as exc:
            _log.info("opaque_connect_failed", target=str(endpoint), error=str(exc))
            src.close(0)
            transport.abort()
            return
        if transport.is_closing():
            if use_splice:
                upstream_sock.close()
            else:
                up_transport.abort()
            src.close(0)
            return
        dst.open()
        if use_splice:
            await self._splice(transport, upstream_sock, initial, src, dst)
            return
        down, _ = relay_transports(
            transport,
            up_transport,
            to_upstream=initial,
            downstream_stats=src,
            upstream_stats=dst,
            on_closed=lambda: _close_both(src, dst),
        )
        if self._eof:
            down.eof_received()  # the client half-closed during detection
        if initial:
            dst.written.value += len(initial)

    async def _splice(
        self,
        transport: asyncio.Transport,
        upstream: socket.socket,
        initial: bytes,
        src: TcpStats,
        dst: TcpStats,
    ) -> None:
        """Take the client socket from its transport and splice it to ``upstream``."""
        loop = asyncio.get_running_loop()
        pseudo = transport.get_extra_info("socket")
        client = socket.socket(fileno=os.dup(pseudo.fileno()))
        client.setblocking(False)
        transport.abort()  # closes the transport's descriptor; our duplicate keeps the socket
        try:
            if initial:
                await loop.sock_sendall(upstream, initial)
                dst.written.value += len(initial)
            relay = SpliceRelay(client, upstream, a_stats=src, b_stats=dst)
            relay.start(a_eof=self._eof)
            self.ctx.opaque_relays.add(relay)
            try:
                await relay.done
            except asyncio.CancelledError:
                relay.close(abort=True)
                raise
            finally:
                self.ctx.opaque_relays.discard(relay)
                errno_ = relay.error
                src.close(errno_)
                dst.close(errno_)
        except OSError:
            client.close()
            upstream.close()
            src.close(0)
            dst.close(0)


def _close_both(src: TcpStats, dst: TcpStats) -> None:
    src.close(0)
    dst.close(0)
