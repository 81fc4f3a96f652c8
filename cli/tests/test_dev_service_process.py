"""Local mode's service processes (tap service, dashboard, Prometheus) start until ready, report
an early exit with their log, and are never left running when the start fails."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from gossamer_cli.dev.service_process import log_tail, start_until_ready, stop_process_group

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


@pytest.fixture
async def spawned(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Every process the helper starts, so a test can see what became of it (and none outlives
    the test, even when the helper failed to stop it)."""
    processes: list[asyncio.subprocess.Process] = []
    spawn = asyncio.create_subprocess_exec

    async def recording(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await spawn(*args, **kwargs)
        processes.append(proc)
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording)
    yield processes
    for proc in processes:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def test_returns_the_running_process_once_the_check_passes(tmp_path: Path) -> None:
    answers = iter([False, False, True])
    proc = await start_until_ready(
        SLEEPER, log_file=tmp_path / "svc.log", ready=lambda: next(answers), what="svc"
    )
    try:
        assert proc.returncode is None
        assert next(answers, "checked no more") == "checked no more"
    finally:
        await stop_process_group(proc)
    assert proc.returncode == -signal.SIGTERM


async def test_an_early_exit_is_reported_with_the_log_not_waited_on(tmp_path: Path) -> None:
    log_file = tmp_path / "svc.log"
    log_file.write_text("an older run's line\n")
    failing = [sys.executable, "-c", "import sys; print('cannot bind 8084'); sys.exit(3)"]
    with pytest.raises(RuntimeError) as info:
        # The limit only bounds this test if the exit went unnoticed; it must not be reached.
        await start_until_ready(failing, log_file=log_file, ready=lambda: False, what="svc")
    message = str(info.value)
    assert message.startswith("svc exited (3):\n")
    assert "an older run's line\ncannot bind 8084\n" in message


async def test_not_ready_in_time_raises_and_stops_the_process(
    tmp_path: Path, spawned: list[asyncio.subprocess.Process]
) -> None:
    with pytest.raises(TimeoutError, match=r"^svc not ready after 0s$"):
        await start_until_ready(
            SLEEPER, log_file=tmp_path / "svc.log", ready=lambda: False, what="svc", limit=0
        )
    (proc,) = spawned
    assert proc.returncode == -signal.SIGTERM


async def test_a_cancelled_start_stops_the_process(
    tmp_path: Path, spawned: list[asyncio.subprocess.Process]
) -> None:
    loop = asyncio.get_running_loop()
    checked = asyncio.Event()

    def ready() -> bool:
        loop.call_soon_threadsafe(checked.set)
        return False

    start = asyncio.create_task(
        start_until_ready(SLEEPER, log_file=tmp_path / "svc.log", ready=ready, what="svc")
    )
    await checked.wait()
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    (proc,) = spawned
    assert proc.returncode == -signal.SIGTERM


def test_log_tail_reads_the_end_of_a_long_log_by_characters(tmp_path: Path) -> None:
    log_file = tmp_path / "svc.log"
    text = "é" * 5000 + "\n" + "x" * 10 + "€"
    log_file.write_text(text)
    assert log_tail(log_file, 1500) == text[-1500:]
    assert log_tail(log_file, 20_000) == text
