"""Local mode's Prometheus: Debian's ``prometheus`` as a process in the node namespace.

It scrapes every proxy's admin port with the viz extension's ``linkerd-proxy`` job. Debian
builds Prometheus without Kubernetes discovery, so a pod informer here writes the targets, with
the labels Kubernetes pod discovery would give them, to a ``file_sd`` file that Prometheus
watches (see :mod:`gossamer_cli.viz.scrape`); the relabelling is the one a cluster uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from pathlib import Path

import structlog
import yaml
from gossamer_kube.client import KubeClient
from gossamer_kube.informer import Informer
from gossamer_kube.resources import PODS
from gossamer_kube.sources import ClientSource
from gossamer_kube.store import StoreEvent

from gossamer_cli.dev.service_process import start_until_ready, stop_process_group
from gossamer_cli.viz import scrape

log = structlog.get_logger("gossamer.dev.prometheus")

LISTEN = "127.0.0.1:9090"
URL = f"http://{LISTEN}"
#: Short, so a test sees traffic in Prometheus seconds after it starts.
SCRAPE_INTERVAL = "2s"


def local_config(targets_file: Path, control_plane_namespace: str) -> dict[str, object]:
    return scrape.prometheus_config(
        control_plane_namespace=control_plane_namespace,
        discovery=scrape.file_discovery(str(targets_file), refresh="2s"),
        scrape_interval=SCRAPE_INTERVAL,
        self_address=LISTEN,
    )


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


class LocalPrometheus:
    def __init__(self, state_dir: Path, client: KubeClient, control_plane_namespace: str) -> None:
        self.state_dir = state_dir
        self.targets_file = state_dir / "targets.json"
        self.config_file = state_dir / "prometheus.yml"
        self.log_file = state_dir / "prometheus.log"
        self.control_plane_namespace = control_plane_namespace
        self._informer = Informer(ClientSource(client, PODS))
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._written = ""
        self.url = URL

    async def start(self, limit: float = 60.0) -> None:
        from gossamer_cli.viz.promapi import PrometheusClient

        binary = prometheus_binary()
        if binary is None:
            raise RuntimeError("no prometheus binary: install Debian's `prometheus` package")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._write_targets()
        config = local_config(self.targets_file, self.control_plane_namespace)
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        self._informer.add_handler(self._on_pods)
        self._task = self._informer.start()
        argv = [
            binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.state_dir / 'data'}",
            "--storage.tsdb.retention.time=6h",
            f"--web.listen-address={LISTEN}",
            "--log.level=warn",
        ]
        self._proc = await start_until_ready(
            argv,
            log_file=self.log_file,
            ready=PrometheusClient(URL, timeout=2.0).ready,
            what="prometheus",
            limit=limit,
        )
        log.info("prometheus is up", url=URL)

    def _on_pods(self, _events: list[StoreEvent]) -> None:
        self._write_targets()

    def _write_targets(self) -> None:
        text = json.dumps(scrape.pod_targets(self._informer.store.objects()), sort_keys=True)
        if text == self._written:
            return
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.targets_file)  # Prometheus never reads half a file
        self._written = text

    async def stop(self, grace: float = 10.0) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._proc is not None:
            await stop_process_group(self._proc, grace)
