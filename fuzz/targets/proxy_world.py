"""An in-memory world for the proxy's connection code: no sockets, one fresh loop per input.

A client connection is a :class:`MemoryTransport` handed to the proxy's real accept path
(:class:`gossamer_proxy.accept.AcceptedConnection`, the protocol the listener creates), so
detection, hand-over and the HTTP/1 or HTTP/2 server run exactly as in production; only
the bytes come from the fuzzer. Upstream connections come from :class:`MemoryConnector`
(the proxy's :class:`~gossamer_proxy.connect.Connector` seam) and are in-memory too; a
scripted backend answers them.

Transports honour flow control both ways, as the kernel and asyncio do: bytes are only
delivered to a protocol that is reading, and a transport whose unread output passes
:data:`HIGH_WATER` calls ``pause_writing()`` on its protocol (``resume_writing()`` once the
peer has read it below :data:`LOW_WATER`). So the retained-state check below is meaningful:
the proxy may only buffer what backpressure lets through.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import types
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from gossamer_proxy.accept import AcceptedConnection
from gossamer_proxy.config import Endpoint, Http1Limits
from gossamer_proxy.connect import Connector, DirectResolver, UpstreamTls
from gossamer_proxy.context import ListenerContext
from gossamer_proxy.errors import ProxyError, ProxyErrorKind
from gossamer_proxy.metrics import ProxyMetrics
from gossamer_proxy.pool import Pool

from ..harness import Finding

HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024
P = TypeVar("P", bound=asyncio.BaseProtocol)
TARGET = Endpoint("127.0.0.1", 8080)
LISTEN = Endpoint("127.0.0.1", 4140)
INBOUND_LISTEN = Endpoint("0.0.0.0", 4143)  # noqa: S104 - the inbound listener's address


class MemoryTransport(asyncio.Transport):
    """One end of an in-memory connection; ``outbox`` is what the protocol wrote."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sockname: tuple[str, int]) -> None:
        super().__init__()
        self.loop = loop
        self.protocol: asyncio.BaseProtocol | None = None
        self.outbox = bytearray()
        self.reading = True
        self.closing = False
        self.lost = False
        self.eof_written = False
        self.eof_received = False
        self.paused_writing = False
        self.max_outbox = 0
        self._sockname = sockname

    # -- what the protocol sees ------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self._sockname
        if name == "peername":
            return ("10.0.0.9", 51000)
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.call_soon(self._lose, None)

    def abort(self) -> None:
        self.outbox.clear()
        self.close()

    def _lose(self, exc: Exception | None) -> None:
        if not self.lost:
            self.lost = True
            self.reading = False
            if self.protocol is not None:
                self.protocol.connection_lost(exc)

    def is_reading(self) -> bool:
        return self.reading and not self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return len(self.outbox)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (LOW_WATER, HIGH_WATER)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing:
            return
        self.outbox += data
        self.max_outbox = max(self.max_outbox, len(self.outbox))
        if len(self.outbox) > HIGH_WATER and not self.paused_writing:
            self.paused_writing = True
            if isinstance(self.protocol, asyncio.Protocol):
                self.protocol.pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    # -- what the peer does ----------------------------------------------------------------

    def take(self, size: int | None = None) -> bytes:
        """The peer reads up to ``size`` bytes of the protocol's output."""
        end = len(self.outbox) if size is None else size
        data = bytes(self.outbox[:end])
        del self.outbox[:end]
        if self.paused_writing and len(self.outbox) <= LOW_WATER and not self.closing:
            self.paused_writing = False
            if isinstance(self.protocol, asyncio.Protocol):
                self.protocol.resume_writing()
        return data

    def deliver(self, data: bytes) -> bool:
        """The peer sends ``data``; False if the protocol is not reading (nothing delivered)."""
        if not self.is_reading() or self.lost or self.eof_received:
            return False
        assert isinstance(self.protocol, asyncio.Protocol)
        self.protocol.data_received(data)
        return True

    def deliver_eof(self) -> None:
        if self.lost or self.eof_received or self.closing:
            return
        self.eof_received = True
        assert isinstance(self.protocol, asyncio.Protocol)
        if not self.protocol.eof_received():
            self.close()

    def reset(self) -> None:
        """The peer resets the connection."""
        self.closing = True
        self.loop.call_soon(self._lose, ConnectionResetError(104, "Connection reset by peer"))


class MemoryConnector(Connector):
    """Opens in-memory upstream connections; ``fail_next`` makes the next connects fail."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(timeout=1.0)
        self.loop = loop
        self.upstreams: list[MemoryTransport] = []
        self.fail_next = 0

    async def open(
        self, endpoint: Endpoint, factory: Callable[[], P], *, tls: UpstreamTls | None = None
    ) -> tuple[asyncio.Transport, P]:
        await asyncio.sleep(0)
        if self.fail_next:
            self.fail_next -= 1
            raise ProxyError(ProxyErrorKind.CONNECT_REFUSED, str(endpoint))
        protocol = factory()
        transport = MemoryTransport(self.loop, (endpoint.host, endpoint.port))
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        self.upstreams.append(transport)
        return transport, protocol


class World:
    """One client connection to a proxy listener, plus whatever upstreams it opens.

    Everything runs inside :meth:`play`'s coroutine on a fresh event loop, so protocol
    callbacks see a running loop as they do in production.
    """

    def __init__(self, *, inbound: bool, limits: Http1Limits) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[str] = []
        self.first_loop_exception: BaseException | None = None
        self.loop.set_exception_handler(self._loop_error)
        self.connector = MemoryConnector(self.loop)
        # Only the fields every version has are required; optional ones are passed when the
        # context still has them, so the harness survives changes to ListenerContext.
        optional = {"fixed_target": None if inbound else TARGET, "splice": False}
        known = {f.name for f in dataclasses.fields(ListenerContext)}
        self.ctx = ListenerContext(
            direction="inbound" if inbound else "outbound",
            listen=INBOUND_LISTEN if inbound else LISTEN,
            detect_timeout=1.0,
            opaque_ports=frozenset({3306}),
            limits=limits,
            pool=Pool(idle_timeout=3.0, max_idle_per_endpoint=4),
            connector=self.connector,
            resolver=DirectResolver(),
            metrics=ProxyMetrics(),
            **{k: v for k, v in optional.items() if k in known},
        )
        # No socket: the original destination falls back to the local address, which
        # outbound is the fixed target's listener and inbound the app port on the pod IP.
        local = ("10.0.0.5", 8080) if inbound else (LISTEN.host, LISTEN.port)
        self.client = MemoryTransport(self.loop, local)
        self.now = 0.0

    def play(self, script: Callable[[World], Coroutine[Any, Any, None]]) -> None:
        """Accept the client connection, run ``script``, tear everything down."""

        async def main() -> None:
            accepted = AcceptedConnection(self.ctx)
            self.client.set_protocol(accepted)
            self.now = self.loop.time()
            accepted.connection_made(self.client)
            try:
                await script(self)
            finally:
                await self.close()

        try:
            self.loop.run_until_complete(main())
        finally:
            self.loop.close()
        self.raise_loop_errors()

    def _loop_error(self, _loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self.loop_errors.append(f"{context.get('message')}: {exc!r}")
        if exc is not None and self.first_loop_exception is None:
            self.first_loop_exception = exc

    async def settle(self, rounds: int = 8) -> None:
        """Let scheduled callbacks and connect tasks run (no time passes)."""
        ready = self.loop._ready  # type: ignore[attr-defined]  # asyncio's run queue
        for _ in range(rounds):
            if not ready:
                break
            await asyncio.sleep(0)
        self.raise_loop_errors()

    def raise_loop_errors(self) -> None:
        if self.loop_errors:
            message = "exception reached the event loop: " + "; ".join(self.loop_errors)
            self.loop_errors = []
            raise Finding(message) from self.first_loop_exception

    def tick(self, advance: float) -> None:
        self.now += advance
        for conn in list(self.ctx.connections):
            conn.tick(self.now)

    def drain(self) -> None:
        self.ctx.draining = True
        for conn in list(self.ctx.connections):
            conn.drain()

    def transports(self) -> list[MemoryTransport]:
        return [self.client, *self.connector.upstreams]

    def protocols(self) -> list[asyncio.BaseProtocol]:
        return [t.protocol for t in self.transports() if t.protocol is not None]

    async def close(self) -> None:
        """Tear everything down, as if every socket were reset."""
        for transport in self.transports():
            if not transport.lost:
                transport.reset()
        await self.settle(3)
        for task in asyncio.all_tasks(self.loop):
            if task is not asyncio.current_task():
                task.cancel()
        await self.settle(3)


_SKIP_TYPES = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
    types.FrameType,
    asyncio.AbstractEventLoop,
    MemoryTransport,
    ListenerContext,
    ProxyMetrics,
)


#: Shared, per-process state a connection points at but does not own.
_SKIP_MODULES = frozenset(
    {
        "gossamer_common.metrics",
        "gossamer_proxy.metrics",
        "gossamer_proxy.pool",
        "gossamer_proxy.connect",
        "gossamer_proxy.config",
        "structlog._config",
        "structlog._generic",
    }
)


def retained_bytes(roots: list[Any], *, limit: int = 50_000) -> int:
    """Bytes held in ``bytes``/``bytearray``/``memoryview``/``str`` objects reachable from
    ``roots`` (not through transports, the listener context, the loop or code objects).

    Walks references rather than naming attributes, so it keeps working when the
    protocol classes change their internals.
    """
    seen: set[int] = set()
    stack = list(roots)
    total = 0
    visited = 0
    kinds = _KINDS
    while stack and visited < limit:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        visited += 1
        cls = type(obj)
        kind = kinds.get(cls)
        if kind is None:
            kind = kinds[cls] = _kind(cls)
        if kind == _BYTES:
            total += len(obj)
        elif kind == _VIEW:
            total += obj.nbytes
        elif kind == _WALK:
            stack.extend(gc.get_referents(obj))
    return total


_SKIP, _BYTES, _VIEW, _WALK = range(4)
_KINDS: dict[type, int] = {}


def _kind(cls: type) -> int:
    if issubclass(cls, bytes | bytearray | str):
        return _BYTES
    if issubclass(cls, memoryview):
        return _VIEW
    if issubclass(cls, _SKIP_TYPES) or issubclass(cls, int | float | type(None)):
        return _SKIP
    if cls.__module__ in _SKIP_MODULES:
        return _SKIP
    return _WALK
