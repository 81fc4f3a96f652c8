"""``python -m gossamer_cli.viz.web``: run the viz dashboard (the extension's ``web`` component)."""

from __future__ import annotations

import asyncio
import functools
import signal
import sys

import click
from gossamer_kube.errors import KubeConfigError

from gossamer_cli.viz.kubeobjects import kube_objects
from gossamer_cli.viz.promapi import PrometheusClient, PrometheusError
from gossamer_cli.viz.web import guard
from gossamer_cli.viz.web.data import DashboardData, TapAccess
from gossamer_cli.viz.web.server import Dashboard, serve

DEFAULT_ADDR = "127.0.0.1:8084"


def split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"want HOST:PORT, not {addr!r}", param_hint="--addr")
    return host.strip("[]") or "127.0.0.1", int(port)


@click.command()
@click.option(
    "--addr", default=DEFAULT_ADDR, show_default=True, help="Where to listen (loopback by default)."
)
@click.option(
    "--prometheus-url", default="http://127.0.0.1:9090", show_default=True,
    help="The viz extension's Prometheus.",
)  # fmt: skip
@click.option("--kubeconfig", default=None, help="Kubeconfig (in a cluster: the pod's account).")
@click.option(
    "--no-kubernetes", is_flag=True, help="Do not read Kubernetes (MESHED is then unknown)."
)
@click.option(
    "--enforced-host",
    default=guard.enforced_host_pattern(),
    show_default=True,
    help="Regular expression the Host header must match (stops DNS rebinding).",
)
@click.option(
    "--tap-url", default=None,
    help="The viz tap service (https://HOST:PORT), for the live tap pages.",
)  # fmt: skip
@click.option(
    "--tap-ca-file", default=None, type=click.Path(exists=True, dir_okay=False),
    help="CA that signed the tap service's certificate.",
)  # fmt: skip
@click.option("--viz-namespace", default="gossamer-viz", show_default=True)
@click.option("-t", "--time-window", default="1m", show_default=True)
@click.option("--log-level", default="info", show_default=True)
def main(
    addr: str,
    prometheus_url: str,
    kubeconfig: str | None,
    no_kubernetes: bool,
    enforced_host: str,
    tap_url: str | None,
    tap_ca_file: str | None,
    viz_namespace: str,
    time_window: str,
    log_level: str,
) -> None:
    """Serve the viz dashboard."""
    from gossamer_common.logging import configure_logging

    configure_logging(log_level, component="viz-web")
    host, port = split_addr(addr)
    try:
        pattern = guard.compile_host_pattern(enforced_host)
        prometheus = PrometheusClient(prometheus_url)
        kube = None if no_kubernetes else functools.partial(kube_objects, kubeconfig)
        tap = _tap_access(tap_url, tap_ca_file, viz_namespace, kubeconfig)
        data = DashboardData(prometheus, kube, window=time_window, tap=tap)
    except (ValueError, PrometheusError, OSError, KubeConfigError) as exc:
        raise click.UsageError(str(exc)) from exc
    sys.exit(asyncio.run(_run(Dashboard(data, pattern), host, port)))


def _tap_access(
    tap_url: str | None, tap_ca_file: str | None, viz_namespace: str, kubeconfig: str | None
) -> TapAccess | None:
    """The tap service, called with the dashboard's own Kubernetes credentials."""
    from pathlib import Path

    from gossamer_kube.config import KubeConfig

    from gossamer_cli.viz.tap_service.client import TapServiceEndpoint, service_name

    if tap_url is None:
        return None
    if not tap_url.startswith("https://") or tap_ca_file is None:
        raise ValueError("--tap-url wants https://HOST:PORT, with --tap-ca-file")
    endpoint = TapServiceEndpoint(
        tap_url, Path(tap_ca_file).read_bytes(), service_name(viz_namespace)
    )
    return TapAccess(endpoint, KubeConfig.load(kubeconfig))


async def _run(dashboard: Dashboard, host: str, port: int) -> int:
    import structlog

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await serve(dashboard, host, port)
    bound = server.sockets[0].getsockname()
    structlog.get_logger("gossamer.viz.web").info(
        "dashboard listening", address=f"{bound[0]}:{bound[1]}"
    )
    async with server:
        await stop.wait()
    return 0


if __name__ == "__main__":
    main()
