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

The handler owns the state; this module only drives the call.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import grpc
import structlog

from gossamer_proxy.mesh.backoff import Backoff, UniformSource

__all__ = ["StreamConfig", "StreamHandler", "StreamWatch"]

log = structlog.get_logger("gossamer.proxy.discovery")

M = TypeVar("M")
M_contra = TypeVar("M_contra", contravariant=True)


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

    def on_final(self, code: grpc.StatusCode, details: str) -> None:
        """The server said the target is not servable; the watch has stopped."""


class _StreamTimeout(Exception):  # noqa: N818 - internal signal
    pass


class StreamWatch(Generic[M]):
    """Drives ``open_call`` (a fresh streaming call each time) into ``handler``."""

    def __init__(
        self,
        name: str,
        open_call: Callable[[], grpc.aio.UnaryStreamCall[Any, M]],
        handler: StreamHandler[M],
        *,
        config: StreamConfig,
        final_codes: Collection[grpc.StatusCode] = (),
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
        """Run one call to its end; returns (received any message, final status)."""
        loop = asyncio.get_running_loop()
        call = self._open()
        messages = aiter(call)
        received = False
        ends_at = loop.time() + self._config.lifetime
        try:
            while True:
                timeout = self._config.idle_timeout if received else self._config.initial_timeout
                remaining = ends_at - loop.time()
                if remaining <= 0:
                    log.debug("control_stream_lifetime", watch=self.name)
                    return received, False
                try:
                    async with asyncio.timeout(min(timeout, remaining)):
                        message = await anext(messages)
                except StopAsyncIteration:
                    log.info("control_stream_ended", watch=self.name)
                    return received, False
                except TimeoutError:
                    if loop.time() >= ends_at:
                        return received, False
                    log.info(
                        "control_stream_timeout",
                        watch=self.name,
                        waited=timeout,
                        first_message=not received,
                    )
                    return received, False
                received = True
                self.connected = True
                try:
                    self._handler.on_message(message)
                except Exception:  # a bad message must not end the watch
                    log.exception("control_stream_message_failed", watch=self.name)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in self._final:
                log.info("control_stream_final", watch=self.name, code=code.name)
                self._handler.on_final(code, exc.details() or "")
                return received, True
            log.info("control_stream_error", watch=self.name, code=code.name, details=exc.details())
            return received, False
        finally:
            call.cancel()
