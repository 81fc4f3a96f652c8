"""The suite's own test apps on loopback: the echo server and the load generator.

The mesh tests trust these two to report who answered and how often, so their behaviour is
checked here first, without any mesh: real processes on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

APPS = Path(__file__).resolve().parent / "apps"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[str], limit: float = 20) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"echo exited: {proc.communicate()[1]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"echo not listening on {port}")


def _echo(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[int, int]]:
    port, tcp = _free_port(), _free_port()
    argv = [
        sys.executable, str(APPS / "echo.py"),
        "--listen", f"127.0.0.1:{port}", "--tcp-listen", f"127.0.0.1:{tcp}", *args,
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"POD_NAME": "echo-pod-1", "PATH": "/usr/bin:/bin", **(env or {})},
    )  # fmt: skip
    try:
        _wait_port(port, proc)
        _wait_port(tcp, proc)
        yield port, tcp
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


@pytest.fixture
def echo() -> Iterator[tuple[int, int]]:
    yield from _echo()


@pytest.fixture
def failing_echo() -> Iterator[tuple[int, int]]:
    yield from _echo("--failure-rate", "1", env={"VERSION": "v9"})


def _load(url: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(APPS / "loadgen.py"), "--url", url, *args],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    summary: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return summary


def test_echo_names_pod_and_version_and_echoes_the_body(echo: tuple[int, int]) -> None:
    url = f"http://127.0.0.1:{echo[0]}/x"
    summary = _load(url, "--count", "30", "--concurrency", "3", "--method", "POST",
                    "--body", "MARKER-123", "--events")  # fmt: skip
    assert summary["sent"] == 30
    assert summary["statuses"] == {"200": 30}
    assert summary["pods"] == {"echo-pod-1": 30}
    assert summary["versions"] == {"v1": 30}
    assert summary["echoed_marker"] == 30
    assert len(summary["events"]) == 30
    assert all(pod == "echo-pod-1" and status == 200 for _, pod, status in summary["events"])


def test_failure_rate_one_answers_500_from_the_pod(failing_echo: tuple[int, int]) -> None:
    summary = _load(f"http://127.0.0.1:{failing_echo[0]}/", "--count", "10")
    assert summary["statuses"] == {"500": 10}
    assert summary["pods"] == {"echo-pod-1": 10}
    assert summary["versions"] == {"v9": 10}


def test_ready_path_is_always_200(failing_echo: tuple[int, int]) -> None:
    summary = _load(f"http://127.0.0.1:{failing_echo[0]}/ready", "--count", "5")
    assert summary["statuses"] == {"200": 5}


def test_tcp_echo_returns_the_bytes(echo: tuple[int, int]) -> None:
    with socket.create_connection(("127.0.0.1", echo[1]), timeout=5) as conn:
        conn.sendall(b"opaque bytes\n")
        assert conn.recv(100) == b"opaque bytes\n"


def test_loadgen_counts_a_refused_connection_as_an_error() -> None:
    summary = _load(f"http://127.0.0.1:{_free_port()}/", "--count", "3", "--timeout", "2")
    assert summary["statuses"] == {"0": 3}
    assert sum(summary["errors"].values()) == 3
    assert summary["pods"] == {}


def test_loadgen_stops_at_max_seconds() -> None:
    # A black hole: accepts connections, never answers.
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        url = f"http://127.0.0.1:{hole.getsockname()[1]}/"
        summary = _load(url, "--count", "1000", "--max-seconds", "1", "--timeout", "2")
    assert summary["sent"] < 1000
    assert summary["ok"] == 0


@pytest.mark.parametrize(
    ("script", "args", "complaint"),
    [
        ("echo.py", ["--failure-rate", "1.5"], "--failure-rate must be within 0..1"),
        ("echo.py", ["--delay-ms", "-1"], "--delay-ms must not be negative"),
        ("loadgen.py", ["--url", "http://127.0.0.1:1/", "--count", "0"], "must be positive"),
    ],
)
def test_bad_flags_are_refused_with_a_reason(
    script: str, args: Sequence[str], complaint: str
) -> None:
    out = subprocess.run(
        [sys.executable, str(APPS / script), *args], capture_output=True, text=True, timeout=30
    )
    assert out.returncode != 0
    assert complaint in out.stderr
