"""``python -m gossamer_proxy``: settings errors and help, as a real process."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gossamer_proxy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


def test_bad_setting_exits_2_naming_the_variable() -> None:
    done = _run(LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT="soon")
    assert done.returncode == 2
    assert "LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT" in done.stderr
    assert "'soon'" in done.stderr


def test_help_lists_linkerd_variables() -> None:
    done = _run("--help")
    assert done.returncode == 0
    assert "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS" in done.stdout
    assert "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION" in done.stdout


def test_linkerds_default_log_filter_shows_the_start_up_line() -> None:
    """``warn,linkerd=info`` (what the injector sets): the pod's log says when the proxy began
    to serve, and how long after its exec; libraries stay at warn."""
    env = {
        **os.environ,
        "LINKERD2_PROXY_LOG": "warn,linkerd=info,hickory=error,[{headers}]=off",
        "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "127.0.0.1:0",
        "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS": "127.0.0.1:0",
        "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "127.0.0.1:0",
        "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD": "1s",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gossamer_proxy"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        readable, _, _ = select.select([proc.stderr], [], [], 60)
        assert readable, "the proxy logged nothing within 60 s"
        first = json.loads(proc.stderr.readline())
        assert first["event"] == "proxy_started"
        assert first["level"] == "info"
        assert 0 < first["seconds_since_exec"] < 600
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0
    events = [json.loads(line)["event"] for line in rest.splitlines()]
    assert events == ["shutdown_requested", "proxy_stopped"]
