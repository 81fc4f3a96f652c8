"""``python -m gossamer_proxy``: settings errors and help, as a real process."""

from __future__ import annotations

import os
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
