"""Local mode's viz dashboard: ``python -m gossamer_cli.viz.web`` as a process in the node
namespace, on its loopback beside Prometheus. ``gossamer viz dashboard`` forwards a port of the
host's loopback to it."""

from __future__ import annotations

import asyncio
import functools
import sys
import urllib.error
import urllib.request
from pathlib import Path

import structlog

from gossamer_cli.dev.service_process import start_until_ready, stop_process_group

log = structlog.get_logger("gossamer.dev.dashboard")

HOST = "127.0.0.1"
PORT = 8084  # the viz web component's port, as Linkerd's
URL = f"http://{HOST}:{PORT}"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def web_ready(url: str = URL, timeout: float = 2.0) -> bool:
    try:
        with _OPENER.open(f"{url}/ready", timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class LocalDashboard:
    def __init__(
        self,
        state_dir: Path,
        kubeconfig: Path,
        prometheus_url: str,
        *,
        tap: tuple[str, Path] | None = None,
    ) -> None:
        self.state_dir = state_dir
        #: The tap service's URL and CA file, for the live tap pages.
        self.tap = tap
        self.kubeconfig = kubeconfig
        self.prometheus_url = prometheus_url
        self.log_file = state_dir / "web.log"
        self.url = URL
        self._proc: asyncio.subprocess.Process | None = None

    def argv(self) -> list[str]:
        argv = [
            sys.executable, "-m", "gossamer_cli.viz.web",
            "--addr", f"{HOST}:{PORT}",
            "--prometheus-url", self.prometheus_url,
            "--kubeconfig", str(self.kubeconfig),
        ]  # fmt: skip
        if self.tap is not None:
            argv += ["--tap-url", self.tap[0], "--tap-ca-file", str(self.tap[1])]
        return argv

    async def start(self, limit: float = 60.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._proc = await start_until_ready(
            self.argv(),
            log_file=self.log_file,
            ready=functools.partial(web_ready, self.url),
            what="viz dashboard",
            limit=limit,
        )
        log.info("viz dashboard is up", url=self.url)

    async def stop(self, grace: float = 10.0) -> None:
        if self._proc is not None:
            await stop_process_group(self._proc, grace)
