"""A multi-core worker's taps, run for its parent's ``Observe`` calls (see :mod:`.remote`).

The parent sends ``tap_start`` (an id, the call's ``ObserveRequest`` and the ``credit``: how
many events the worker may send; the worker answers ``tap_started`` once its tap observes
requests), ``tap_credit`` (the parent's client took events: send that many more),
``tap_limit`` (the call's limit is reached across processes: take no more requests) and
``tap_stop`` (the call ended). For each started tap the worker runs an ordinary
:class:`~.taps.Tap` and sends its events back in ``tap_events`` frames, at most
:data:`BATCH_EVENTS` events or about :data:`BATCH_BYTES` per frame and never more than its
credit, waiting for the link to drain between frames; meanwhile the tap's bounded queue drops
(and counts) what does not fit, so neither the data path nor the parent waits for a slow
client. When the tap is done (its limit used up and its requests ended, or stopped),
``tap_done`` carries how many events it dropped.
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

#: Credit one tap may hold: more is a broken parent's, and refused.
MAX_CREDIT: Final = 1 << 20

Send = Callable[[dict[str, Any]], Awaitable[None]]


def _credit_of(value: object) -> int | None:
    """A positive event count within :data:`MAX_CREDIT`, else ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_CREDIT:
        return value
    return None


class _Relayed:
    """One running tap of the parent's: its pump task and the events it may still send."""

    __slots__ = ("credit", "credited", "tap", "task")

    def __init__(self, tap: Tap, credit: int) -> None:
        self.tap = tap
        self.credit = credit
        #: Set when the parent grants credit.
        self.credited = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class TapRelay:
    """Runs the parent's taps in this worker; ``send`` writes one frame to the parent."""

    def __init__(self, taps: Taps, send: Send) -> None:
        self._taps = taps
        self._send = send
        self._running: dict[int, _Relayed] = {}

    def handle(self, message: dict[str, Any]) -> bool:
        """Act on a ``tap_*`` message from the parent; ``False``: not one of them."""
        kind = message["type"]
        if kind not in ("tap_start", "tap_credit", "tap_limit", "tap_stop"):
            return False
        tap_id = message.get("tap")
        if not isinstance(tap_id, int):
            return True
        if kind == "tap_start":
            self._start(tap_id, message.get("request"), message.get("credit"))
            return True
        running = self._running.get(tap_id)
        if running is None:
            return True
        if kind == "tap_credit":
            credit = _credit_of(message.get("credit"))
            if credit is not None:
                running.credit = min(running.credit + credit, MAX_CREDIT)
                running.credited.set()
        elif kind == "tap_limit":
            self._taps.exhaust(running.tap)
        elif running.task is not None:
            running.task.cancel()
        return True

    def _refuse(self, tap_id: int, reason: str) -> None:
        _log.warning("tap_relay_refused", tap=tap_id, reason=reason)
        task = asyncio.ensure_future(self._send({"type": "tap_done", "tap": tap_id, "dropped": 0}))
        task.add_done_callback(_ignore_result)

    def _start(self, tap_id: int, encoded: object, credit_value: object) -> None:
        credit = _credit_of(credit_value)
        if tap_id in self._running or not isinstance(encoded, str) or credit is None:
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
        running = _Relayed(tap, credit)
        running.task = asyncio.create_task(
            self._pump(tap_id, running, wake), name=f"tap-relay-{tap_id}"
        )
        self._running[tap_id] = running

    async def _pump(self, tap_id: int, running: _Relayed, wake: asyncio.Event) -> None:
        tap = running.tap
        try:
            # The tap observes requests already; the parent's call may now be accepted.
            await self._send({"type": "tap_started", "tap": tap_id})
            while True:
                if tap.done and not tap.queue:
                    break
                if running.credit <= 0:
                    # The parent's client is behind: the tap's queue fills and drops (and
                    # counts) until the parent grants more.
                    running.credited.clear()
                    await running.credited.wait()
                    continue
                batch: list[str] = []
                size = 0
                most = min(BATCH_EVENTS, running.credit)
                while len(batch) < most and size < BATCH_BYTES:
                    event = tap.next_event()
                    if event is None:
                        break
                    data = event.SerializeToString()
                    size += len(data)
                    batch.append(base64.b64encode(data).decode("ascii"))
                if batch:
                    running.credit -= len(batch)
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
        tasks = [r.task for r in self._running.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _ignore_result(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a closed link at shutdown is not worth a warning
