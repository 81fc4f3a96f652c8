"""A multi-core worker's taps, run for its parent's ``Observe`` calls (see :mod:`.remote`).

The parent sends ``tap_start`` (an id and the call's ``ObserveRequest``; the worker answers
``tap_started`` once its tap observes requests), ``tap_limit`` (the
call's limit is reached across processes: take no more requests) and ``tap_stop`` (the call
ended). For each started tap the worker runs an ordinary :class:`~.taps.Tap` and sends its
events back in ``tap_events`` frames, at most :data:`BATCH_EVENTS` events or about
:data:`BATCH_BYTES` per frame, waiting for the link to drain between frames; meanwhile the
tap's bounded queue drops what does not fit, so the data path never waits. When the tap is
done (its limit used up and its requests ended, or stopped), ``tap_done`` carries how many
events it dropped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

import structlog
from google.protobuf.message import DecodeError
from gossamer_api.proxy import tap_pb2

from .match import InvalidMatchError, compile_match, wants_headers
from .taps import Tap, Taps, TooManyTapsError

__all__ = ["BATCH_BYTES", "BATCH_EVENTS", "TapRelay"]

_log = structlog.get_logger("gossamer.proxy.tap")

#: Events in one ``tap_events`` frame, at most ...
BATCH_EVENTS: Final = 256
#: ... and about this many serialized bytes (one event may pass it alone).
BATCH_BYTES: Final = 1 << 20

Send = Callable[[dict[str, Any]], Awaitable[None]]


class TapRelay:
    """Runs the parent's taps in this worker; ``send`` writes one frame to the parent."""

    def __init__(self, taps: Taps, send: Send) -> None:
        self._taps = taps
        self._send = send
        self._running: dict[int, tuple[Tap, asyncio.Task[None]]] = {}

    def handle(self, message: dict[str, Any]) -> bool:
        """Act on a ``tap_*`` message from the parent; ``False``: not one of them."""
        kind = message["type"]
        if kind not in ("tap_start", "tap_limit", "tap_stop"):
            return False
        tap_id = message.get("tap")
        if not isinstance(tap_id, int):
            return True
        if kind == "tap_start":
            self._start(tap_id, message.get("request"))
        elif kind == "tap_limit":
            running = self._running.get(tap_id)
            if running is not None:
                self._taps.exhaust(running[0])
        else:
            running = self._running.get(tap_id)
            if running is not None:
                running[1].cancel()
        return True

    def _refuse(self, tap_id: int, reason: str) -> None:
        _log.warning("tap_relay_refused", tap=tap_id, reason=reason)
        task = asyncio.ensure_future(self._send({"type": "tap_done", "tap": tap_id, "dropped": 0}))
        task.add_done_callback(_ignore_result)

    def _start(self, tap_id: int, encoded: object) -> None:
        if tap_id in self._running or not isinstance(encoded, str):
            self._refuse(tap_id, "duplicate or malformed tap_start")
            return
        try:
            request = tap_pb2.ObserveRequest.FromString(base64.b64decode(encoded, validate=True))
            matcher = compile_match(request)
        except (ValueError, DecodeError, InvalidMatchError) as exc:
            self._refuse(tap_id, f"bad request: {exc}")
            return
        wake = asyncio.Event()
        try:
            tap = self._taps.start(
                matcher, limit=request.limit, headers=wants_headers(request), wake=wake.set
            )
        except TooManyTapsError as exc:
            self._refuse(tap_id, str(exc))
            return
        task = asyncio.create_task(self._pump(tap_id, tap, wake), name=f"tap-relay-{tap_id}")
        self._running[tap_id] = (tap, task)

    async def _pump(self, tap_id: int, tap: Tap, wake: asyncio.Event) -> None:
        try:
            # The tap observes requests already; the parent's call may now be accepted.
            await self._send({"type": "tap_started", "tap": tap_id})
            while True:
                batch: list[str] = []
                size = 0
                while len(batch) < BATCH_EVENTS and size < BATCH_BYTES:
                    event = tap.next_event()
                    if event is None:
                        break
                    data = event.SerializeToString()
                    size += len(data)
                    batch.append(base64.b64encode(data).decode("ascii"))
                if batch:
                    await self._send({"type": "tap_events", "tap": tap_id, "events": batch})
                    continue
                if tap.done:
                    break
                wake.clear()
                await wake.wait()
        except (ConnectionError, OSError) as exc:  # the parent went away: the worker drains
            _log.debug("tap_relay_link_closed", tap=tap_id, error=str(exc))
        finally:
            self._running.pop(tap_id, None)
            self._taps.stop(tap)
            with contextlib.suppress(Exception):  # the link may be gone (the worker drains)
                done = {"type": "tap_done", "tap": tap_id, "dropped": tap.dropped}
                task = asyncio.ensure_future(self._send(done))
                task.add_done_callback(_ignore_result)

    async def close(self) -> None:
        tasks = [task for _, task in self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _ignore_result(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a closed link at shutdown is not worth a warning
