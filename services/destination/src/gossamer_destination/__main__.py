"""``python -m gossamer_destination``: the destination and policy controller."""

from __future__ import annotations

import os

import structlog
from gossamer_common.logging import configure_logging
from gossamer_common.runtime import run
from gossamer_common.settings import load_or_exit
from gossamer_common.shutdown import Shutdown
from gossamer_kube.client import KubeClient
from gossamer_kube.config import KubeConfig

from gossamer_destination.app import DestinationApp, kube_sources, status_patcher
from gossamer_destination.settings import DestinationSettings

log = structlog.get_logger("gossamer_destination")


async def main(settings: DestinationSettings) -> None:
    shutdown = Shutdown(grace=5.0)
    shutdown.install_signal_handlers()
    async with KubeClient(KubeConfig.load(settings.kubeconfig)) as client:
        app = DestinationApp(
            settings, kube_sources(client, settings.crd_recheck), status_patcher(client)
        )
        await app.start()
        await shutdown.wait()
        await app.stop()


if __name__ == "__main__":
    configure_logging(os.environ.get("GOSSAMER_LOG_LEVEL", "info"), component="destination")
    settings = load_or_exit(
        DestinationSettings,
        prog="gossamer-destination",
        description="Destination (Get, GetProfile) and inbound/outbound policy APIs.",
    )
    run(main(settings))
