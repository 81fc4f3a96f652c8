"""Local mode's viz dashboard: ``python -m gossamer_cli.viz.web`` as a process in the node
namespace, on its loopback beside Prometheus. ``gossamer viz dashboard`` forwards a port of the
host's loopback to it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

import structlog

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

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv(), stdout=out, stderr=out, start_new_session=True
            )
        await self._wait_ready()
        log.info("viz dashboard is up", url=self.url)

    async def _wait_ready(self, limit: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            assert self._proc is not None
            if self._proc.returncode is not None:
                tail = self.log_file.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"viz dashboard exited ({self._proc.returncode}):\n{tail}")
            if await asyncio.to_thread(web_ready, self.url):
                return
            if loop.time() > deadline:
                raise TimeoutError(f"viz dashboard not ready after {limit}s")
            await asyncio.sleep(0.2)

    async def stop(self, grace: float = 10.0) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
