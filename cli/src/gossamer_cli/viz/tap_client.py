"""The tap service's fan-out (I/O): ``Tap/Observe`` to every selected proxy, streams merged.

Each target pod's proxy is dialled at ``podIP:4190`` over mTLS: the client certificate is
the tap identity's, and the server must prove the pod's own identity (SNI and name check),
so a tap never reads events from anything but the proxy it meant. Events from all proxies
are merged into one bounded queue; when the reader is slow the per-proxy streams stop being
read, HTTP/2 flow control pushes back, and the proxies drop (they never block their
traffic for a tap). A proxy that cannot be tapped is reported on ``errors`` and the others
go on.

``--max-rps`` is applied here (:class:`RateGate`): requests beyond the rate are skipped,
with their response events.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Final

from gossamer_api.proxy import tap_pb2
from gossamer_api.proxy.tap_grpc import TapStub
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.exceptions import GRPCError, StreamTerminatedError

from gossamer_cli.viz.tap_identity import TapCredentials
from gossamer_cli.viz.tap_query import CONTROL_PORT, TapTarget

__all__ = ["RateGate", "TapSession", "client_context"]

TapEvent = tap_pb2.TapEvent
QUEUE_SIZE: Final = 1024
_MAX_TRACKED: Final = 100_000


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[str]:
    fd = os.memfd_create("gossamer-tap", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def client_context(credentials: TapCredentials) -> ssl.SSLContext:
    """TLS 1.3 with the tap certificate (its key never touches a file system)."""
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cadata=credentials.trust_anchors_pem.decode()
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["h2"])
    with _memory_file(credentials.chain_pem) as cert, _memory_file(credentials.key_pem) as key:
        context.load_cert_chain(cert, key)
    return context


class RateGate:
    """Admits at most ``max_rps`` new requests a second (sans-io: the clock is passed in)."""

    def __init__(self, max_rps: float, clock: Callable[[], float]) -> None:
        self.max_rps = max_rps
        self._clock = clock
        self._tokens = max(max_rps, 1.0)
        self._at = clock()
        self._admitted: set[tuple[str, int, int, int]] = set()

    def admit(self, source: str, event: TapEvent) -> bool:
        http = event.http
        kind = http.WhichOneof("event")
        if kind is None:
            return False
        msg = getattr(http, kind)
        key = (source, event.proxy_direction, msg.id.base, msg.id.stream)
        if kind != "request_init":
            if kind == "response_end":
                if key in self._admitted:
                    self._admitted.discard(key)
                    return True
                return False
            return key in self._admitted
        if self.max_rps <= 0:
            return self._track(key)
        now = self._clock()
        self._tokens = min(self._tokens + (now - self._at) * self.max_rps, max(self.max_rps, 1.0))
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return self._track(key)

    def _track(self, key: tuple[str, int, int, int]) -> bool:
        if len(self._admitted) >= _MAX_TRACKED:
            self._admitted.clear()  # a lossy stream must not grow this without bound
        self._admitted.add(key)
        return True


class TapSession:
    """Observe on every target; iterate :meth:`events` for the merged stream."""

    def __init__(
        self,
        targets: list[TapTarget],
        request: tap_pb2.ObserveRequest,
        credentials: TapCredentials,
        *,
        port: int = CONTROL_PORT,
        max_rps: float = 100.0,
    ) -> None:
        self.targets = targets
        self.request = request
        self.port = port
        self._context = client_context(credentials)
        self._queue: asyncio.Queue[tuple[str, TapEvent] | None] = asyncio.Queue(QUEUE_SIZE)
        self._gate = RateGate(max_rps, time.monotonic)
        #: ``(pod, error)`` for every proxy that could not be tapped.
        self.errors: list[tuple[str, str]] = []

    async def _observe(self, target: TapTarget) -> None:
        config = Configuration(ssl_target_name_override=target.identity)
        channel = Channel(target.ip, self.port, ssl=self._context, config=config)
        name = f"{target.namespace}/{target.pod}"
        try:
            async with TapStub(channel).Observe.open() as stream:
                await stream.send_message(self.request, end=True)
                async for event in stream:
                    await self._queue.put((name, event))
        except GRPCError as exc:
            self.errors.append((name, f"{exc.status.name}: {exc.message}"))
        except (OSError, StreamTerminatedError, ssl.SSLError) as exc:
            self.errors.append((name, str(exc) or type(exc).__name__))
        finally:
            channel.close()

    async def events(self) -> AsyncIterator[tuple[str, TapEvent]]:
        """``(pod, event)`` merged (as ``--max-rps`` admits) until every stream has ended."""
        tasks = [asyncio.ensure_future(self._observe(t)) for t in self.targets]

        async def finish() -> None:
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._queue.put(None)

        closer = asyncio.ensure_future(finish())
        try:
            while (item := await self._queue.get()) is not None:
                source, event = item
                if self._gate.admit(source, event):
                    yield source, event
        finally:
            for task in (*tasks, closer):
                task.cancel()
            await asyncio.gather(*tasks, closer, return_exceptions=True)
