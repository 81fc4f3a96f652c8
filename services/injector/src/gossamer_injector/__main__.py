"""``python -m gossamer_injector``: wire settings, TLS, the apiserver client and the servers."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import structlog
from gossamer_common.admin import AdminServer
from gossamer_common.logging import configure_logging
from gossamer_common.metrics import Registry
from gossamer_common.runtime import run
from gossamer_common.settings import describe, load_or_exit
from gossamer_common.shutdown import Shutdown
from gossamer_inject import ConfigError, resolve
from gossamer_inject.config import __version__
from gossamer_kube.client import KubeClient
from gossamer_kube.config import KubeConfig

from gossamer_injector.lookups import Lookuper
from gossamer_injector.metrics import InjectorMetrics
from gossamer_injector.server import Injector, serve
from gossamer_injector.settings import InjectorSettings
from gossamer_injector.tls_reload import ReloadingServerTLS

_log = structlog.get_logger("gossamer.injector")


async def amain(settings: InjectorSettings) -> int:
    anchors = settings.trust_anchors_file.read_text()
    if "-----BEGIN CERTIFICATE-----" not in anchors:
        _log.error("bad_trust_anchors", file=str(settings.trust_anchors_file))
        return 2
    mesh = settings.mesh_values(anchors)
    try:
        resolve(mesh, {}, ingress=False)  # validate the defaults once, at start-up
    except ConfigError as exc:
        _log.error("bad_settings", error=str(exc))
        return 2
    tls = ReloadingServerTLS(settings.tls_cert_file, settings.tls_key_file)
    registry = Registry()
    ready = False
    shutdown = Shutdown(grace=settings.shutdown_grace)
    shutdown.install_signal_handlers()
    admin = AdminServer(registry=registry, ready=lambda: ready)
    await admin.start(settings.admin_listen.host, settings.admin_listen.port)
    async with KubeClient(
        KubeConfig.load(settings.kubeconfig), user_agent="gossamer-injector"
    ) as kube:
        lookups = Lookuper(
            kube,
            namespace_ttl=settings.namespace_cache_ttl,
            namespace_stale=settings.namespace_cache_stale,
        )
        injector = Injector(
            mesh=mesh,
            created_by=f"gossamer/proxy-injector {__version__}",
            resolver=lookups,
            metrics=InjectorMetrics(registry),
        )
        runner, port = await serve(
            injector, settings.listen.host, settings.listen.port, tls.context
        )
        watcher = asyncio.create_task(tls.watch(settings.tls_reload_interval))
        ready = True
        _log.info("started", port=port, admin_port=admin.port, **describe(settings))
        await shutdown.wait()
        ready = False
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await runner.shutdown()
        await runner.cleanup()
        await lookups.close()
    await admin.close()
    _log.info("stopped", reason=shutdown.reason)
    return 0


def main() -> None:
    settings = load_or_exit(
        InjectorSettings,
        prog="gossamer-injector",
        description="The Gossamer proxy injector: a mutating admission webhook.",
    )
    configure_logging(settings.log_level, component="injector")
    sys.exit(run(amain(settings)))


if __name__ == "__main__":
    main()
