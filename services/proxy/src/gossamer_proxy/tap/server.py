"""The proxy's control listener: ``io.linkerd.proxy.tap.Tap/Observe`` over mTLS (port 4190).

On only when ``LINKERD2_PROXY_TAP_SVC_NAME`` is set and the proxy has a mesh identity, as in
Linkerd. The listener demands a client certificate chained to the trust anchors (TLS 1.3,
ALPN ``h2``) and serves only the client whose identity equals the tap service name; any
other verified client gets ``PERMISSION_DENIED``, and a client without a certificate fails
the handshake. The certificate is the proxy's own, reloaded into the same context when the
identity renews it (:meth:`TapServer.tick`).

Each ``Observe`` call becomes a :class:`~.taps.Tap` and streams its events until its limit
is used up and the requests it took have ended, or the client goes away. Sending waits for
the client's HTTP/2 window; meanwhile the data path keeps running and the tap's bounded
queue drops what does not fit.

On a multi-core proxy the parent's service also taps every worker (:mod:`.remote`): the
workers' events join the call's stream, taken in turns with the parent's own, and
:class:`~.fanin.FanIn` holds the merged stream to the call's limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from typing import Any

import structlog
from gossamer_api.proxy import tap_pb2
from gossamer_api.proxy.tap_grpc import TapBase
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server, Stream

from ..config import Endpoint
from ..local_identity import LocalIdentity
from ..mesh.tls_contexts import (
    Credentials,
    certificate_sans,
    load_credentials,
    server_context,
)
from .fanin import FanIn
from .match import InvalidMatchError, compile_match, wants_headers
from .remote import RemoteTap, RemoteTaps
from .taps import Tap, Taps, TooManyTapsError

__all__ = ["TapServer", "TapService", "identity_of_cert"]

_log = structlog.get_logger("gossamer.proxy.tap")

#: Seconds an ``Observe`` call waits for the workers of a multi-core proxy to start tapping.
WORKER_START_TIMEOUT = 2.0


def identity_of_cert(cert: dict[str, Any] | None) -> str | None:
    """The mesh identity (first DNS or URI SAN) of a verified peer certificate."""
    names = certificate_sans(cert)
    return names[0] if names else None


class TapService(TapBase):
    """``Tap/Observe`` for the one authorized client identity."""

    def __init__(self, taps: Taps, authorized: str) -> None:
        self.taps = taps
        self.authorized = authorized
        #: The workers of a multi-core proxy (set by its supervisor), else ``None``.
        self.remote: RemoteTaps | None = None

    async def Observe(  # noqa: N802 - the gRPC method's name
        self, stream: Stream[tap_pb2.ObserveRequest, tap_pb2.TapEvent]
    ) -> None:
        client = identity_of_cert(stream.peer.cert())
        if client != self.authorized:
            _log.info("tap_refused", client_id=client)
            raise GRPCError(
                Status.PERMISSION_DENIED, f"client identity {client or '-'} may not tap this proxy"
            )
        request = await stream.recv_message()
        if request is None or request.limit == 0:
            raise GRPCError(Status.INVALID_ARGUMENT, "limit must be a positive number")
        try:
            matcher = compile_match(request)
        except InvalidMatchError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, f"invalid match: {exc}") from exc
        wake = asyncio.Event()
        try:
            tap = self.taps.start(
                matcher, limit=request.limit, headers=wants_headers(request), wake=wake.set
            )
        except TooManyTapsError as exc:
            raise GRPCError(Status.RESOURCE_EXHAUSTED, str(exc)) from exc
        remote = self.remote
        workers = remote.open(request, wake.set) if remote is not None else None
        _log.debug("tap_started", limit=request.limit, workers=workers is not None)
        try:
            if workers is not None:
                await _workers_tapping(workers, wake)
            await stream.send_initial_metadata()  # accepted: the client knows it is tapping
            if remote is None or workers is None:
                await self._stream(stream, tap, wake)
            else:
                await self._stream_merged(stream, tap, remote, workers, request.limit, wake)
        finally:
            self.taps.stop(tap)
            dropped = tap.dropped
            if remote is not None and workers is not None:
                remote.close(workers)
                dropped += workers.dropped
            if dropped:
                _log.info("tap_events_dropped", dropped=dropped)

    @staticmethod
    async def _stream(
        stream: Stream[tap_pb2.ObserveRequest, tap_pb2.TapEvent], tap: Tap, wake: asyncio.Event
    ) -> None:
        """One process: the tap holds its own limit."""
        while True:
            batch = _Batch()
            while not batch.full:
                event = tap.next_event()
                if event is None:
                    break
                batch.add(event.SerializeToString())
            if batch.parts:
                await batch.send(stream)
                continue
            if tap.done:
                return
            wake.clear()
            await wake.wait()

    async def _stream_merged(
        self,
        stream: Stream[tap_pb2.ObserveRequest, tap_pb2.TapEvent],
        tap: Tap,
        remote: RemoteTaps,
        workers: RemoteTap,
        limit: int,
        wake: asyncio.Event,
    ) -> None:
        """The parent's and the workers' events, in turns, held to the call's limit."""
        fan_in = FanIn(limit)
        limited = False
        while True:
            batch = _Batch()
            while not batch.full:
                local = tap.next_event()
                if local is not None and fan_in.admit(local):
                    batch.add(local.SerializeToString())
                found = workers.next_with_bytes()
                if found is not None and fan_in.admit(found[0]):
                    batch.add(found[1])
                if local is None and found is None:
                    break
            if fan_in.full and not limited:
                limited = True
                self.taps.exhaust(tap)
                remote.limit(workers)
            if batch.parts:
                await batch.send(stream)
                continue
            if tap.done and workers.done:
                return
            wake.clear()
            await wake.wait()


#: Events written to the client at once, at most ...
BATCH_EVENTS = 64
#: ... and about this many bytes (one event may pass it alone).
BATCH_BYTES = 64 * 1024
_GRPC_PREFIX = struct.Struct(">?I")


class _Batch:
    """Events framed as gRPC messages, sent in one HTTP/2 write.

    grpclib's ``send_message`` makes one HTTP/2 write per message; a tap at full load sends
    thousands of events a second, so the proxy frames a batch of them itself (the same
    5-byte prefix grpclib writes) and hands the bytes to the call's HTTP/2 stream, which still
    waits for the client's flow-control window. grpclib keeps that stream private
    (``Stream._stream``); its own ``send_message`` calls the same ``send_data``.
    """

    __slots__ = ("count", "parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.count = 0
        self.size = 0

    @property
    def full(self) -> bool:
        return self.count >= BATCH_EVENTS or self.size >= BATCH_BYTES

    def add(self, message: bytes) -> None:
        self.count += 1
        self.parts.append(_GRPC_PREFIX.pack(False, len(message)))
        self.parts.append(message)
        self.size += _GRPC_PREFIX.size + len(message)

    async def send(self, stream: Stream[tap_pb2.ObserveRequest, tap_pb2.TapEvent]) -> None:
        await stream._stream.send_data(b"".join(self.parts))


async def _workers_tapping(workers: RemoteTap, wake: asyncio.Event) -> None:
    """Until every worker's tap runs (bounded): once the call is accepted, every process
    taps. A worker slower than :data:`WORKER_START_TIMEOUT` joins the call when it can."""
    try:
        async with asyncio.timeout(WORKER_START_TIMEOUT):
            while not workers.tapping:
                wake.clear()
                await wake.wait()
    except TimeoutError:
        _log.warning("tap_workers_slow_to_start", waiting=len(workers.starting))


class TapServer:
    """The control listener; starts once the proxy holds a certificate."""

    def __init__(
        self, identity: LocalIdentity, taps: Taps, authorized: str, listen: Endpoint
    ) -> None:
        self.identity = identity
        self.listen = listen
        self.service = TapService(taps, authorized)
        self._server: Server | None = None
        self._context: ssl.SSLContext | None = None
        self._credentials: Credentials | None = None
        self._starting: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def started(self) -> bool:
        return self._server is not None

    def _build_context(self, credentials: Credentials) -> ssl.SSLContext:
        context = server_context(
            credentials, self.identity.trust_anchors_pem, alpn_protocols=("h2",)
        )
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    async def start(self) -> bool:
        """Listen if the proxy has a certificate (``False``: not yet; :meth:`tick` retries)."""
        credentials = self.identity.credentials
        if self._server is not None or credentials is None:
            return self._server is not None
        self._credentials = credentials
        self._context = self._build_context(credentials)
        server = Server([self.service])
        await server.start(
            self.listen.host, self.listen.port, ssl=self._context, reuse_address=True
        )
        self._server = server
        listener = server._server  # grpclib keeps its asyncio server private
        sockets = getattr(listener, "sockets", None) or ()
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.listen.port
        _log.info("tap_listening", addr=f"{self.listen.host}:{self.port}")
        return True

    def tick(self) -> None:
        """Housekeeping: start once a certificate exists; load a renewed one."""
        credentials = self.identity.credentials
        if credentials is None:
            return
        if self._server is None:
            if self._starting is None or self._starting.done():
                self._starting = asyncio.ensure_future(self._start_logged())
            return
        if credentials is not self._credentials and self._context is not None:
            self._credentials = credentials
            load_credentials(self._context, credentials)  # new handshakes use the new cert

    async def _start_logged(self) -> None:
        try:
            await self.start()
        except OSError as exc:
            _log.warning("tap_listen_failed", error=str(exc))

    async def close(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await self._starting
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
