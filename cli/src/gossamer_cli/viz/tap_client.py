"""The tap service's fan-out (I/O): ``Tap/Observe`` to every selected proxy, streams merged.

Each target pod's proxy is dialled at ``podIP:4190`` over mTLS: the client certificate is
the tap identity's, and the server must prove the pod's own identity (SNI and name check),
so a tap never reads events from anything but the proxy it meant. Events from all proxies
are merged into one bounded queue; when the reader is slow the per-proxy streams stop being
read, HTTP/2 flow control pushes back, and the proxies drop (they never block their
traffic for a tap). A proxy that cannot be tapped is reported on ``errors`` and the others
go on.

``--max-rps`` is applied as Linkerd's tap service does, at the proxies: each pod gets its
share of the rate as the ``limit`` of one ``Observe`` call per second (a call ends once
that many requests have ended; the next starts when the second is up). Requests beyond it
cost the proxy no events at all. ``--max-rps 0`` keeps one unlimited call per pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Final

from gossamer_api.proxy import tap_pb2
from gossamer_api.proxy.tap_grpc import TapStub
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.exceptions import GRPCError, StreamTerminatedError

from gossamer_cli.viz.tap_identity import TapCredentials
from gossamer_cli.viz.tap_query import CONTROL_PORT, STREAM_LIMIT, TapTarget

__all__ = ["INTERVAL", "TapSession", "client_context", "per_call_limit"]

TapEvent = tap_pb2.TapEvent
QUEUE_SIZE: Final = 1024
#: How long each rate-limited ``Observe`` call's share lasts.
INTERVAL: Final = 1.0


def per_call_limit(max_rps: float, pods: int) -> int:
    """Requests one pod's ``Observe`` call may take (``max_rps <= 0``: unlimited)."""
    if max_rps <= 0:
        return STREAM_LIMIT
    return max(1, int(max_rps * INTERVAL / max(pods, 1)))


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
        self.request = tap_pb2.ObserveRequest()
        self.request.CopyFrom(request)
        self.limited = max_rps > 0
        self.request.limit = per_call_limit(max_rps, len(targets))
        self.port = port
        self._context = client_context(credentials)
        self._queue: asyncio.Queue[tuple[str, TapEvent] | None] = asyncio.Queue(QUEUE_SIZE)
        #: ``(pod, error)`` for every proxy that could not be tapped.
        self.errors: list[tuple[str, str]] = []

    async def _observe(self, target: TapTarget) -> None:
        config = Configuration(ssl_target_name_override=target.identity)
        channel = Channel(target.ip, self.port, ssl=self._context, config=config)
        name = f"{target.namespace}/{target.pod}"
        loop = asyncio.get_running_loop()
        try:
            while True:
                started = loop.time()
                async with TapStub(channel).Observe.open() as stream:
                    await stream.send_message(self.request, end=True)
                    async for event in stream:
                        await self._queue.put((name, event))
                if not self.limited:
                    return  # an unlimited call ended: the proxy went away
                await asyncio.sleep(max(INTERVAL - (loop.time() - started), 0.0))
        except GRPCError as exc:
            self.errors.append((name, f"{exc.status.name}: {exc.message}"))
        except (OSError, StreamTerminatedError, ssl.SSLError) as exc:
            self.errors.append((name, str(exc) or type(exc).__name__))
        finally:
            channel.close()

    async def events(self) -> AsyncIterator[tuple[str, TapEvent]]:
        """``(pod, event)`` merged, until every pod's stream has ended for good."""
        tasks = [asyncio.ensure_future(self._observe(t)) for t in self.targets]

        async def finish() -> None:
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._queue.put(None)

        closer = asyncio.ensure_future(finish())
        try:
            while (item := await self._queue.get()) is not None:
                yield item
        finally:
            for task in (*tasks, closer):
                task.cancel()
            await asyncio.gather(*tasks, closer, return_exceptions=True)
