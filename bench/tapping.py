"""A tap client around one benchmark row: started before the load, its counts read after.

The ``tap`` topology's ``tapped`` target runs its c=64 row with a tap client
(:mod:`bench.tap_client`) observing every request the proxy serves. The client runs on the
load CPU and is not part of the target's measured CPU; it is stopped after every row so each
round's counts are that row's alone.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from bench.measured import TapSeen
from bench.procs import Proc, ProcGroup

#: A tap client's start (imports, handshake, the proxy accepting the call).
START_TIMEOUT = 60.0


@dataclass
class TapRow:
    """Filled in after the row: what the tap client printed (``None``: nothing parsable)."""

    counts: dict[str, object] | None = None

    def seen(self, requests: int) -> TapSeen:
        counts = self.counts or {"error": "the tap client printed no counts"}

        def number(key: str) -> int:
            value = counts.get(key, 0)
            return value if isinstance(value, int) else 0

        error = counts.get("error")
        return TapSeen(
            requests=requests,
            events=number("events"),
            request_inits=number("request_init"),
            response_ends=number("response_end"),
            error=str(error) if error else None,
        )


def _wait_for_line(proc: Proc, prefix: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(line.startswith(prefix) for line in proc.log.read_text().splitlines()):
            return
        if proc.popen.poll() is not None:
            break
        time.sleep(0.05)
    tail = proc.log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"the tap client did not start tapping:\n{tail}")


def parse_counts(text: str) -> dict[str, object] | None:
    for line in text.splitlines():
        if line.startswith("TAPJSON "):
            data = json.loads(line.removeprefix("TAPJSON "))
            return data if isinstance(data, dict) else None
    return None


@contextlib.contextmanager
def tapping(group: ProcGroup, row: int) -> Iterator[TapRow]:
    """A tap client observing the proxy of ``group`` for the duration of the block."""
    info = group.info
    proc = group.start(
        f"tap-client-{row}",
        [
            sys.executable,
            "-m",
            "bench.tap_client",
            "--port",
            info["tap_port"],
            "--server-name",
            info["tap_server_name"],
            "--ca",
            info["tap_ca"],
            "--cert",
            info["tap_cert"],
            "--key",
            info["tap_key"],
        ],
        load=True,
        measured=False,
    )
    tap = TapRow()
    try:
        _wait_for_line(proc, "tapping", START_TIMEOUT)
        yield tap
    finally:
        group.forget(proc)  # SIGTERM: the client drains the stream and prints its counts
        tap.counts = parse_counts(proc.log.read_text(errors="replace"))
