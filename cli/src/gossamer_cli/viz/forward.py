"""Forward a port of this machine's loopback to a TCP address inside a network namespace.

Local mode's viz dashboard listens on the node namespace's loopback; ``gossamer viz dashboard``
makes it reachable from the host, as ``linkerd viz dashboard`` port-forwards to the web pod.
The process stays in the host's namespace: one worker thread moves into the node namespace
(``setns`` moves only the calling thread) and creates the sockets there; a socket belongs to
the namespace it was created in, so the event loop then connects and relays through it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket

import structlog
from gossamer_common.netns import enter_netns

log = structlog.get_logger("gossamer.viz.forward")

CHUNK = 64 * 1024
MAX_CONNECTIONS = 64
CONNECT_TIMEOUT = 10.0


def _tcp_socket() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


class NetnsConnector:
    """Opens TCP connections from inside the network namespace at ``netns_path``."""

    def __init__(self, netns_path: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, initializer=enter_netns, initargs=(netns_path,)
        )

    async def check(self) -> None:
        """Fails (with the setns error) when the namespace cannot be entered."""
        loop = asyncio.get_running_loop()
        try:
            sock = await loop.run_in_executor(self._pool, _tcp_socket)
        except concurrent.futures.BrokenExecutor as exc:
            raise OSError(f"cannot enter the network namespace: {exc}") from exc
        sock.close()

    async def connect(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        sock = await loop.run_in_executor(self._pool, _tcp_socket)
        try:
            sock.setblocking(False)
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock, limit=CHUNK)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF; ``drain`` applies backpressure, so at most a chunk or so is buffered."""
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def forward(
    connector: NetnsConnector, listen_host: str, listen_port: int, target: tuple[str, int]
) -> asyncio.Server:
    active = 0

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        if active >= MAX_CONNECTIONS:
            writer.close()
            return
        active += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await connector.connect(*target)
            await asyncio.gather(_relay(reader, upstream), _relay(up_reader, writer))
        except (OSError, TimeoutError) as exc:
            log.warning(
                "cannot reach the dashboard", target=f"{target[0]}:{target[1]}", error=str(exc)
            )
        finally:
            active -= 1
            for w in (writer, upstream):
                if w is not None:
                    w.close()
                    with contextlib.suppress(Exception):
                        await w.wait_closed()

    return await asyncio.start_server(on_client, listen_host, listen_port, limit=CHUNK)
