"""A local-mode service that runs as a process of its own in the node namespace (the viz tap
service, the dashboard, Prometheus): started in a new session with its output appended to a
log file, polled until its readiness check passes, and stopped by process group.

A process that exits before it is ready is reported at once, with the end of its log; one
that is not ready in time is stopped. Either way nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

#: How long the wait sleeps between two readiness checks, unless the process exits first.
POLL_INTERVAL = 0.2
#: How much of the log an early exit reports.
LOG_TAIL_CHARS = 1500


async def start_until_ready(
    argv: Sequence[str],
    *,
    log_file: Path,
    ready: Callable[[], bool],
    what: str,
    limit: float = 60.0,
    interval: float = POLL_INTERVAL,
) -> asyncio.subprocess.Process:
    """Start ``argv`` and return its process once ``ready()`` answers True.

    ``ready`` may block (it runs in a thread) and must bound its own time. ``what`` names the
    service in errors: :class:`RuntimeError` with the log's tail when the process exits first,
    :class:`TimeoutError` when it is not ready after ``limit`` seconds. The process group is
    stopped before either is raised, and when the wait is cancelled.
    """
    with log_file.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=out, stderr=out, start_new_session=True
        )
    try:
        await _wait_ready(proc, log_file, ready, what, limit, interval)
    except BaseException:
        await stop_process_group(proc)
        raise
    return proc


async def _wait_ready(
    proc: asyncio.subprocess.Process,
    log_file: Path,
    ready: Callable[[], bool],
    what: str,
    limit: float,
    interval: float,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    exited = asyncio.ensure_future(proc.wait())
    try:
        while True:
            if proc.returncode is not None:
                tail = log_tail(log_file)
                raise RuntimeError(f"{what} exited ({proc.returncode}):\n{tail}")
            # Ready only counts while the process lives: another one may hold its port.
            if await asyncio.to_thread(ready) and proc.returncode is None:
                return
            if proc.returncode is None and loop.time() >= deadline:
                raise TimeoutError(f"{what} not ready after {limit}s")
            await asyncio.wait([exited], timeout=interval)  # wakes at once on an exit
    finally:
        exited.cancel()


def log_tail(log_file: Path, chars: int = LOG_TAIL_CHARS) -> str:
    """The last ``chars`` characters of the log, read without reading all of a long log."""
    with log_file.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 4 * chars - 4))  # enough bytes for ``chars`` UTF-8 characters
        return f.read().decode(errors="replace")[-chars:]


async def stop_process_group(proc: asyncio.subprocess.Process, grace: float = 10.0) -> None:
    """SIGTERM to the process's group; SIGKILL after ``grace`` seconds. No-op once it exited."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
