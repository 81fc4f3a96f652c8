"""One server-streaming control-plane call kept alive forever: reconnects, timeouts, backoff.

Every discovery watch (``Destination.Get``/``GetProfile``, ``InboundServerPolicies.WatchPort``,
``OutboundPolicies.Watch``) follows the same contract (linkerd-wire.md §3.2, §10 items 4-5):

* the first message must arrive within the initial timeout (3 s), later messages within the
  idle timeout (5 m), and a stream is re-opened after its lifetime (1 h) regardless;
* a clean end of stream, a timeout or most gRPC errors mean "re-subscribe after a jittered
  exponential backoff"; the backoff resets once a message arrives;
* some status codes are final (``INVALID_ARGUMENT``/``FAILED_PRECONDITION`` on Destination:
  no profile; ``NOT_FOUND``/``UNIMPLEMENTED`` on OutboundPolicies: no policy); the watch
  then reports them and stops;
* while disconnected the handler keeps its last state: the proxy serves from it.

The handler owns the state; this module only drives the call. A call is a
:class:`~.rpc.ServerStream` (grpclib): every transport or server failure arrives as one
:class:`~.rpc.RpcError` with a :class:`grpclib.const.Status`, and leaving a stream early
resets it (RST_STREAM) so the control plane drops the watch at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, Protocol, TypeVar

import structlog
from grpclib.const import Status

from gossamer_proxy.mesh.backoff import Backoff, UniformSource
from gossamer_proxy.mesh.rpc import RpcError

__all__ = ["StreamConfig", "StreamHandler", "StreamWatch"]

log = structlog.get_logger("gossamer.proxy.discovery")

M = TypeVar("M")
M_contra = TypeVar("M_contra", contravariant=True)
M_co = TypeVar("M_co", covariant=True)


@dataclass(frozen=True, slots=True)
class StreamConfig:
    initial_timeout: float = 3.0
    idle_timeout: float = 300.0
    lifetime: float = 3600.0
    backoff: Backoff = field(default_factory=lambda: Backoff(min=0.1, max=10.0, jitter_ratio=0.5))


class StreamHandler(Protocol[M_contra]):
    def on_message(self, message: M_contra) -> None:
        """A message arrived (exceptions are logged; the stream goes on)."""

    def on_reconnect(self) -> None:
        """A new stream is starting after a previous one ended; state is still valid."""

    def on_final(self, code: Status, details: str) -> None:
        """The server said the target is not servable; the watch has stopped."""


class ServerStreamCall(Protocol[M_co]):
    """One opened server-streaming call (:class:`~.rpc.ServerStream` in production)."""

    async def __aenter__(self) -> ServerStreamCall[M_co]: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None: ...

    async def next(self) -> M_co | None:
        """The next message; ``None`` after a clean end; :class:`RpcError` otherwise."""


class StreamWatch(Generic[M]):
    """Drives ``open_call`` (a fresh streaming call each time) into ``handler``."""

    def __init__(
        self,
        name: str,
        open_call: Callable[[], ServerStreamCall[M]],
        handler: StreamHandler[M],
        *,
        config: StreamConfig,
        final_codes: Collection[Status] = (),
        rng: UniformSource | None = None,
    ) -> None:
        self.name = name
        self._open = open_call
        self._handler = handler
        self._config = config
        self._final = frozenset(final_codes)
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter
        #: Whether a stream is currently delivering messages.
        self.connected = False
        #: How many streams have been opened (1 + reconnects).
        self.streams_opened = 0

    async def run(self) -> None:
        attempt = 0
        while True:
            if self.streams_opened:
                self._handler.on_reconnect()
            self.streams_opened += 1
            received, final = await self._one_stream()
            self.connected = False
            if final:
                return
            if received:
                attempt = 0
            delay = self._config.backoff.delay(attempt, self._rng)
            attempt += 1
            await asyncio.sleep(delay)

    async def _one_stream(self) -> tuple[bool, bool]:
        """Run one call to its end; returns (received any message, final status).

        The initial timeout covers connecting and sending the request as well as the first
        message, so a control plane that black-holes connections is retried on schedule.
        """
        loop = asyncio.get_running_loop()
        first_deadline = loop.time() + self._config.initial_timeout
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    async with asyncio.timeout_at(first_deadline):
                        call = await stack.enter_async_context(self._open())
                except TimeoutError:
                    self._log_timeout(self._config.initial_timeout, first_message=True)
                    return False, False
                return await self._receive(call, first_deadline)
        except RpcError as exc:
            if exc.status in self._final:
                log.info("control_stream_final", watch=self.name, code=exc.status.name)
                self._handler.on_final(exc.status, exc.details)
                return False, True
            log.info(
                "control_stream_error", watch=self.name, code=exc.status.name, details=exc.details
            )
            # ``connected`` is False when a stream starts and set by its first message.
            return self.connected, False

    async def _receive(self, call: ServerStreamCall[M], first_deadline: float) -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        received = False
        ends_at = loop.time() + self._config.lifetime
        while True:
            if loop.time() >= ends_at:
                log.debug("control_stream_lifetime", watch=self.name)
                return received, False
            if received:
                timeout = self._config.idle_timeout
                deadline = min(loop.time() + timeout, ends_at)
            else:
                timeout = self._config.initial_timeout
                deadline = min(first_deadline, ends_at)
            try:
                async with asyncio.timeout_at(deadline):
                    message = await call.next()
            except TimeoutError:
                if loop.time() >= ends_at:
                    log.debug("control_stream_lifetime", watch=self.name)
                    return received, False
                self._log_timeout(timeout, first_message=not received)
                return received, False
            if message is None:
                log.info("control_stream_ended", watch=self.name)
                return received, False
            received = True
            self.connected = True
            try:
                self._handler.on_message(message)
            except Exception:  # a bad message must not end the watch
                log.exception("control_stream_message_failed", watch=self.name)

    def _log_timeout(self, waited: float, *, first_message: bool) -> None:
        log.info(
            "control_stream_timeout", watch=self.name, waited=waited, first_message=first_message
        )
