"""``python -m gossamer_proxy.worker``: one worker of a multi-core proxy (see :mod:`.multicore`).

Started only by the parent proxy, with ``GOSSAMER_PROXY_WORKER_FD`` naming its end of a
private socket pair and the parent's bound ports in the listen-address variables. It waits
for the parent's ``start`` message (identity and first certificate), listens on the shared
ports, says ``ready``, then answers metrics requests, installs renewed certificates and runs
the parent's taps (:mod:`.tap.relay`) until SIGTERM (or its parent going away) drains it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import sys
from typing import Any

import structlog
from gossamer_common.log_filter import LogFilter, LogFilterError
from gossamer_common.logging import configure_logging
from gossamer_common.runtime import freeze_startup_objects, run
from gossamer_common.settings import load_or_exit

from .app import Proxy
from .config import Endpoint, ProxySettings
from .cores import FrameDecoder, FrameError, encode_frame
from .local_identity import LocalIdentity
from .multicore import WORKER_FD_ENV, WORKER_INDEX_ENV, credentials_from_wire, read_frames
from .observe import number_connections

_log = structlog.get_logger("gossamer.proxy.worker")


def _endpoint(value: Any) -> Endpoint:
    host, port = value
    if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"bad listen address {value!r}")
    return Endpoint(host, port)


def _listening_as_parent(settings: ProxySettings, message: dict[str, Any]) -> ProxySettings:
    """The settings with the parent's bound addresses: every process shares the same ports."""
    return dataclasses.replace(
        settings,
        inbound_listen=_endpoint(message["inbound"]),
        outbound_listen=tuple(_endpoint(o) for o in message["outbound"]),
        outbound_listen_single=None,
        admin_listen=_endpoint(message["admin"]),
    )


def _identity(message: dict[str, Any]) -> LocalIdentity | None:
    data = message.get("identity")
    if data is None:
        return None
    identity = LocalIdentity(
        str(data["name"]),
        str(data["trust_anchors_pem"]),
        pushed=True,
        server_name=str(data.get("server_name") or data["name"]),
    )
    identity.install(credentials_from_wire(data["credentials"]))
    return identity


async def _serve_link(
    proxy: Proxy,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    decoder: FrameDecoder,
    early: list[dict[str, Any]],
) -> None:
    """Answer the parent until it goes away; ``early``: messages read with ``start``."""
    relay = None
    if proxy.taps is not None:
        from .tap.relay import TapRelay

        async def send(message: dict[str, Any]) -> None:
            writer.write(encode_frame(message))
            await writer.drain()

        relay = TapRelay(proxy.taps, send)
    messages = early
    try:
        while messages or (messages := await read_frames(reader, decoder)):
            batch, messages = messages, []
            for message in batch:
                if message["type"] == "metrics":
                    text = proxy.metrics.registry.render().decode()
                    writer.write(
                        encode_frame({"type": "metrics", "id": message.get("id"), "text": text})
                    )
                elif message["type"] == "credentials" and proxy.identity is not None:
                    proxy.identity.install(credentials_from_wire(message))
                elif message["type"].startswith("tap_"):
                    if relay is not None:
                        relay.handle(message)
                    elif message["type"] == "tap_start":  # tap is off here: none to run
                        done = {"type": "tap_done", "tap": message.get("tap"), "dropped": 0}
                        writer.write(encode_frame(done))
    except (FrameError, ConnectionError, ValueError, KeyError, TypeError) as exc:
        _log.warning("proxy_worker_link_broken", error=str(exc))
    finally:
        if relay is not None:
            await relay.close()
    proxy.shutdown_control.request("parent proxy link closed")


async def _main(settings: ProxySettings, link: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=link)
    decoder = FrameDecoder()
    messages = await read_frames(reader, decoder)
    if not messages or messages[0]["type"] != "start":
        print("gossamer-proxy worker: no start message from the parent", file=sys.stderr)
        raise SystemExit(2)
    try:
        settings = _listening_as_parent(settings, messages[0])
        identity = _identity(messages[0])
        number_connections(
            int(os.environ.get(WORKER_INDEX_ENV, "0")),
            int(messages[0].get("processes", 1)),
            int(messages[0].get("generation", 0)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        print(f"gossamer-proxy worker: bad start message: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    proxy = Proxy(settings, worker=True, worker_identity=identity)
    proxy.shutdown_control.install_signal_handlers()
    await proxy.start()
    freeze_startup_objects()
    writer.write(encode_frame({"type": "ready", "pid": os.getpid()}))
    link_task = asyncio.create_task(_serve_link(proxy, reader, writer, decoder, messages[1:]))
    await proxy.shutdown_control.wait()
    await proxy.shutdown()
    link_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await link_task
    writer.close()


def main() -> None:
    fd_text = os.environ.get(WORKER_FD_ENV)
    if not fd_text or not fd_text.isdigit():
        print(
            f"gossamer-proxy worker: {WORKER_FD_ENV} is not set; run by the proxy only",
            file=sys.stderr,
        )
        raise SystemExit(2)
    link = socket.socket(fileno=int(fd_text))
    settings = load_or_exit(ProxySettings, prog="gossamer-proxy-worker")
    try:
        log_filter = LogFilter.parse(settings.log_level)
    except LogFilterError:
        log_filter = LogFilter.parse("warn")
    configure_logging(component="proxy", log_filter=log_filter, log_format=settings.log_format)
    structlog.contextvars.bind_contextvars(worker=int(os.environ.get(WORKER_INDEX_ENV, "0")))
    run(_main(settings, link))


if __name__ == "__main__":
    main()
