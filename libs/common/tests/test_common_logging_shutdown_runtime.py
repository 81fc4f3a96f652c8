"""JSON logging with redaction, graceful drain (short real timers), and runtime tuning."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import logging
import os
import signal
from collections.abc import Iterator

import pytest
import structlog
from gossamer_common import runtime
from gossamer_common.logging import REDACTED, configure_logging, is_secret_key
from gossamer_common.shutdown import Shutdown


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("info", component="test", stream=stream)
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def events(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_with_level_filter_and_redaction(log_stream: io.StringIO) -> None:
    log = structlog.get_logger("x")
    log.debug("hidden")
    log.info(
        "started",
        token="abc",
        api_key="k",
        issuer_key_path="/var/run/key.pem",
        nested={"password": "p", "user": "u"},
        port=8080,
    )
    (event,) = events(log_stream)
    assert event["event"] == "started"
    assert event["level"] == "info"
    assert event["component"] == "test"
    assert event["token"] == REDACTED
    assert event["api_key"] == REDACTED
    assert event["issuer_key_path"] == "/var/run/key.pem"
    assert event["nested"] == {"password": REDACTED, "user": "u"}
    assert event["port"] == 8080
    assert "ts" in event


def test_stdlib_loggers_are_json_too(log_stream: io.StringIO) -> None:
    logging.getLogger("grpc").warning("backend %s down", "b1", extra={"secret": "s"})
    (event,) = events(log_stream)
    assert event["event"] == "backend b1 down"
    assert event["level"] == "warning"
    assert event["secret"] == REDACTED


def test_library_loggers_can_be_quieter_than_our_own() -> None:
    """``warn,linkerd=info``: the proxy's own start-up line shows, asyncio's info does not."""
    stream = io.StringIO()
    configure_logging("info", component="proxy", stream=stream, library_level="warn")
    try:
        structlog.get_logger("gossamer.proxy").info("proxy_started")
        logging.getLogger("asyncio").info("library chatter")
        logging.getLogger("asyncio").warning("library trouble")
        assert [e["event"] for e in events(stream)] == ["proxy_started", "library trouble"]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()


def test_bad_level() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_logging("loud", component="x")


def test_secret_key_names() -> None:
    for key in ("token", "serviceAccountToken", "client_secret", "privateKey", "PASSWORD",
                "authorization", "bearer-token"):  # fmt: skip
        assert is_secret_key(key), key
    for key in ("monkey", "key_path", "tls_key_file", "keys_dir", "event", "token_name", "port"):
        assert not is_secret_key(key), key


async def test_drain_waits_for_in_flight_work() -> None:
    shutdown = Shutdown(grace=5)
    stopped: list[str] = []

    async def stop_async() -> None:
        stopped.append("async")

    shutdown.on_stop_accepting(lambda: stopped.append("sync"))
    shutdown.on_stop_accepting(stop_async)
    release = asyncio.Event()

    async def work() -> None:
        with shutdown.track():
            await release.wait()

    task = asyncio.create_task(work())
    await asyncio.sleep(0)
    assert shutdown.in_flight == 1
    shutdown.request("test")
    drain = asyncio.create_task(shutdown.drain())
    await asyncio.sleep(0.05)
    assert stopped == ["sync", "async"]
    assert not drain.done()
    release.set()
    assert await drain is True
    await task
    assert shutdown.reason == "test"


async def test_drain_gives_up_after_grace() -> None:
    shutdown = Shutdown(grace=0.05)
    never = asyncio.Event()

    async def stuck() -> None:
        with shutdown.track():
            await never.wait()

    task = asyncio.create_task(stuck())
    await asyncio.sleep(0)
    assert await shutdown.drain() is False
    assert shutdown.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert shutdown.in_flight == 0


async def test_second_request_forces_exit_and_failing_stopper_is_survived() -> None:
    shutdown = Shutdown(grace=30)

    def broken() -> None:
        raise RuntimeError("listener already gone")

    shutdown.on_stop_accepting(broken)
    never = asyncio.Event()

    async def stuck() -> None:
        with shutdown.track():
            await never.wait()

    task = asyncio.create_task(stuck())
    await asyncio.sleep(0)
    shutdown.request("SIGTERM")
    drain = asyncio.create_task(shutdown.drain())
    await asyncio.sleep(0.02)
    shutdown.request("SIGTERM")
    assert await drain is False
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_sigterm_requests_shutdown() -> None:
    shutdown = Shutdown(grace=1)
    shutdown.install_signal_handlers((signal.SIGUSR1,))  # a signal pytest does not use
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        async with asyncio.timeout(5):
            await shutdown.wait()
        assert shutdown.reason == "SIGUSR1"
        assert await shutdown.drain() is True
    finally:
        shutdown.remove_signal_handlers()


def test_negative_grace_rejected() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        Shutdown(grace=-1)


def test_runtime_run_uses_uvloop_and_tunes_gc() -> None:
    before = gc.get_threshold()

    async def loop_name() -> str:
        return type(asyncio.get_running_loop()).__module__

    try:
        assert runtime.run(loop_name()).startswith("uvloop")
        assert gc.get_threshold() == runtime.DEFAULT_GC_THRESHOLDS
        runtime.freeze_startup_objects()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        asyncio.set_event_loop_policy(None)


def test_default_stream_is_the_stderr_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    configure_logging("info", component="test")
    try:
        log = structlog.get_logger("swap")
        log.info("before")
        first.close()  # e.g. a test runner's capture ending
        second = io.StringIO()
        monkeypatch.setattr("sys.stderr", second)
        log.info("after")
        logging.getLogger("stdlib").warning("stdlib after")
        lines = [json.loads(line)["event"] for line in second.getvalue().splitlines()]
        assert lines == ["after", "stdlib after"]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
