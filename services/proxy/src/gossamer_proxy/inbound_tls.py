"""The meshed inbound listener: peek for a ClientHello, then terminate, pass through, or not.

With an identity, every inbound connection is first *peeked* at (``MSG_PEEK``, so nothing is
consumed; linkerd-wire.md §9 inbound step 2) until :func:`~.mesh.tls_detect.detect_client_hello`
decides:

* a ClientHello whose SNI is this proxy's identity (or, for a URI identity, its server
  name) is terminated as mesh mTLS (TLS 1.3, the
  client certificate verified against the trust anchors when sent) and the connection
  continues as :class:`~.accept.AcceptedConnection` over the TLS transport;
* a ClientHello for any other name is passed through untouched as opaque TCP
  (``tls="opaque"``), for applications that terminate TLS themselves;
* anything else — or nothing within the detect timeout (server-speaks-first protocols) — is
  plaintext and continues exactly as without identity.

A peek that returns a partial ClientHello cannot wait for readability (the socket stays
readable), so it re-peeks after a short pause, bounded by the detect timeout. A TLS
handshake that fails (an untrusted client certificate, a client that gives up) costs only
that connection and is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from typing import Final

import structlog

from .config import Endpoint
from .context import ListenerContext
from .local_identity import LocalIdentity
from .mesh.tls_detect import (
    MAX_CLIENT_HELLO,
    ClientHello,
    NeedMore,
    detect_client_hello,
    is_valid_server_name,
)

__all__ = ["PLAINTEXT", "InboundListener", "InboundMode"]

_log = structlog.get_logger("gossamer.proxy")
_REPEEK_PAUSE: Final = 0.002
_REPEEK_PAUSE_MAX: Final = 0.05


@dataclass(frozen=True, slots=True)
class InboundMode:
    """What TLS detection decided for one accepted connection."""

    terminate: bool = False
    """Mesh mTLS was terminated: the transport is a TLS transport."""
    passthrough_sni: str | None = None
    """TLS for another name: forward it opaquely."""


PLAINTEXT: Final = InboundMode()


def classify(hello: ClientHello | None, local_name: str) -> InboundMode:
    """Terminate for our own name, pass through for others, plaintext without a hello."""
    if hello is None:
        return PLAINTEXT
    if hello.server_name is not None and hello.server_name == local_name.lower().rstrip("."):
        return InboundMode(terminate=True)
    # Passed through all the same; an SNI that is no host name (up to 64 KiB of anything)
    # is not kept for the connection's metric labels.
    sni = hello.server_name or ""
    return InboundMode(passthrough_sni=sni if is_valid_server_name(sni) else "")


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    future: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not future.done():
            future.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await future
    finally:
        loop.remove_reader(fd)


async def peek_client_hello(sock: socket.socket, wait: float) -> ClientHello | None:
    """The ClientHello at the start of ``sock``, or ``None`` (not TLS, EOF, or silence)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    seen = -1
    pause = _REPEEK_PAUSE
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        try:
            async with asyncio.timeout(remaining):
                await _readable(loop, sock)
        except TimeoutError:
            return None
        try:
            data = sock.recv(MAX_CLIENT_HELLO + 5, socket.MSG_PEEK)
        except BlockingIOError:
            continue
        except OSError:
            return None
        if not data:
            return None
        result = detect_client_hello(data)
        if isinstance(result, ClientHello):
            return result
        if not isinstance(result, NeedMore):
            return None
        if len(data) == seen:
            # Still readable but nothing new: the rest of the hello is in flight.
            await asyncio.sleep(min(pause, max(remaining, 0)))
            pause = min(pause * 2, _REPEEK_PAUSE_MAX)
        seen = len(data)


class InboundListener:
    """Accept loop of the inbound listener when the proxy has a mesh identity."""

    def __init__(
        self, ctx: ListenerContext, identity: LocalIdentity, *, reuse_port: bool = False
    ) -> None:
        self.ctx = ctx
        self.reuse_port = reuse_port
        self.identity = identity
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Endpoint:
        listen = self.ctx.listen
        family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        sock = socket.create_server(
            (listen.host, listen.port), family=family, backlog=4096, reuse_port=self.reuse_port
        )
        sock.setblocking(False)
        self._sock = sock
        bound = sock.getsockname()
        self.ctx.listen = Endpoint(str(bound[0]), int(bound[1]))
        self._task = asyncio.create_task(self._accept_loop(sock), name="inbound-accept")
        return self.ctx.listen

    def close(self) -> None:
        """Stop accepting (connections already accepted carry on)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:
                _log.warning("inbound_accept_failed", error=str(exc))
                await asyncio.sleep(0.01)
                continue
            conn.setblocking(False)
            if self.ctx.draining:
                conn.close()
                continue
            self.ctx.spawn(self._handle(conn))

    async def _handle(self, conn: socket.socket) -> None:
        from .accept import AcceptedConnection

        ctx = self.ctx
        loop = asyncio.get_running_loop()
        try:
            hello = await peek_client_hello(conn, ctx.detect_timeout)
        except BaseException:
            conn.close()
            raise
        mode = classify(hello, self.identity.server_name)
        context = self.identity.server_context() if mode.terminate else None
        if mode.terminate and context is None:
            _log.info("inbound_tls_refused_no_certificate")
            conn.close()
            return
        try:
            await loop.connect_accepted_socket(
                lambda: AcceptedConnection(ctx, mode),
                conn,
                ssl=context,
                ssl_handshake_timeout=ctx.detect_timeout if context is not None else None,
            )
        except (OSError, TimeoutError) as exc:
            _log.info("inbound_tls_handshake_failed", error=str(exc) or type(exc).__name__)
            with contextlib.suppress(OSError):
                conn.close()
