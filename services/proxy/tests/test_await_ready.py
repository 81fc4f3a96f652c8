"""gossamer-await: the non-native sidecar mode's postStart hook (was provided by nothing)."""

from __future__ import annotations

import http.server
import subprocess
import threading
from collections.abc import Callable, Iterator

import pytest
from gossamer_proxy.await_ready import main, parse_duration, wait_ready


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2m", 120.0), ("90s", 90.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("7", 7.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2x", "m2", "1m 2s", "-1", "2m!"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_wait_ready_polls_until_ready_or_the_deadline() -> None:
    now = [0.0]
    answers = iter([False, False, True])
    assert wait_ready(lambda: next(answers), 10.0, clock=lambda: now[0],
                      sleep=lambda d: now.__setitem__(0, now[0] + d))  # fmt: skip
    assert now[0] == pytest.approx(0.4)
    now[0] = 0.0
    assert not wait_ready(lambda: False, 1.0, clock=lambda: now[0],
                          sleep=lambda d: now.__setitem__(0, now[0] + d))  # fmt: skip
    assert now[0] >= 1.0


@pytest.fixture
def admin_port() -> Iterator[tuple[int, list[int]]]:
    """A stand-in admin server whose /ready answers the status in the returned list."""
    status = [503]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status[0] if self.path == "/ready" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], status
    finally:
        server.shutdown()
        server.server_close()


def test_main_exits_zero_when_ready_and_one_at_the_timeout(
    admin_port: tuple[int, list[int]],
) -> None:
    port, status = admin_port
    assert main([f"--port={port}", "--timeout=300ms"]) == 1
    status[0] = 200
    assert main([f"--port={port}", "--timeout=2m"]) == 0


def test_the_command_is_installed(require_program: Callable[..., str]) -> None:
    """The injector's hook names `gossamer-await`: the proxy package must provide it."""
    command = require_program("gossamer-await")
    result = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "--timeout" in result.stdout
