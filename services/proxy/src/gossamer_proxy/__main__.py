"""``python -m gossamer_proxy``: run the sidecar proxy from its LINKERD2_PROXY_* environment."""

from __future__ import annotations

import asyncio
import os
import sys

import structlog
from gossamer_common.log_control import LogLevels
from gossamer_common.log_filter import LogFilter, LogFilterError
from gossamer_common.logging import configure_logging
from gossamer_common.runtime import freeze_startup_objects, run
from gossamer_common.settings import load_or_exit

from .app import Proxy
from .config import ProxySettings
from .cores import available_cpus, cores_from_env
from .local_identity import IdentityConfigError
from .mesh.authz import PolicyError
from .observe import number_connections

_FALLBACK_FILTER = "warn"


def _available_cpus() -> int:
    try:
        cpu_max: str | None = open("/sys/fs/cgroup/cpu.max").read()  # noqa: SIM115
    except OSError:
        cpu_max = None
    return available_cpus(len(os.sched_getaffinity(0)), cpu_max)


async def _main(settings: ProxySettings, log_levels: LogLevels, cores: int) -> None:
    if cores > 1:
        number_connections(0, cores)  # the workers number theirs 1.. (see .multicore)
    try:
        proxy = Proxy(settings, log_levels=log_levels, reuse_port=cores > 1)
    except (IdentityConfigError, PolicyError, ValueError) as exc:
        print(f"gossamer-proxy: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # Before start(): a SIGTERM that comes while the proxy starts (a kubelet's liveness
    # restart, a pod deleted at once) drains it like any other, instead of killing it.
    proxy.shutdown_control.install_signal_handlers()
    await proxy.start()
    if cores == 1:
        freeze_startup_objects()  # start-up objects live forever: keep them out of GC passes
        await proxy.shutdown_control.wait()
        await proxy.shutdown()
        return
    from .multicore import Supervisor  # only a multi-core proxy pays for it

    supervisor = Supervisor(proxy, cores)
    supervisor.start()
    freeze_startup_objects()
    await proxy.shutdown_control.wait()
    # Every process drains at once: each finishes its own in-flight requests.
    await asyncio.gather(supervisor.drain(), proxy.shutdown())


def main() -> None:
    settings = load_or_exit(
        ProxySettings,
        prog="gossamer-proxy",
        description="Gossamer transparent sidecar proxy: inbound 4143, outbound 4140, admin 4191.",
    )
    try:
        log_filter = LogFilter.parse(settings.log_level)
        bad_filter = None
    except LogFilterError as exc:  # Linkerd starts anyway, without the bad directives
        log_filter, bad_filter = LogFilter.parse(_FALLBACK_FILTER), exc
    # Linkerd's default filter (warn,linkerd=info) keeps the proxy's own events at info: its
    # start-up line says in the pod's log when it began to serve.
    log_levels = configure_logging(
        component="proxy", log_filter=log_filter, log_format=settings.log_format
    )
    log = structlog.get_logger("gossamer.proxy")
    if bad_filter is not None:
        log.warning("log_filter_invalid", error=str(bad_filter), using=_FALLBACK_FILTER)
    cores, warnings = cores_from_env(os.environ, _available_cpus())
    for warning in warnings:
        log.warning("proxy_cores_setting_ignored", reason=warning)
    if cores > 1:
        log.info("proxy_cores", cores=cores)
    run(_main(settings, log_levels, cores))


if __name__ == "__main__":
    main()
