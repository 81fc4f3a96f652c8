"""``gossamer dev``: run the whole mesh on this machine (local mode)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import click

from gossamer_cli.dev import images, node
from gossamer_cli.dev.layout import NodeLayout
from gossamer_cli.dev.table import Screen

DEFAULT_STATE = Path("/var/lib/gossamer/local")
#: ``gossamer dev up``'s own log while the demo's table has the terminal (under state/logs).
DEV_LOG = "gossamer-dev.log"
DEFAULT_RUNTIME_VENV = Path(os.environ.get("GOSSAMER_RUNTIME_VENV", "/opt/gossamer/runtime"))


def _require_root() -> None:
    if os.geteuid() != 0:
        raise click.ClickException(
            "local mode needs root: it creates network namespaces, writes iptables rules in "
            "them and runs the proxy as uid 2102. Run it with sudo (e.g. `sudo make demo`)."
        )


@click.group("dev")
def dev() -> None:
    """Local mode: a real Kubernetes control plane, Gossamer, and pods as network namespaces."""


@dev.command("up")
@click.option("--demo", is_flag=True, help="Deploy the demo app and show a live table.")
@click.option("--headless", is_flag=True, help="No table; write ready.json and wait.")
@click.option("--state-dir", type=click.Path(path_type=Path), default=DEFAULT_STATE)
@click.option("--prefix", default="gsm", help="Prefix of every namespace and interface name.")
@click.option("--runtime-venv", type=click.Path(path_type=Path), default=DEFAULT_RUNTIME_VENV)
@click.option("--duration", type=float, default=0.0, help="Stop by itself after N seconds.")
@click.option(
    "--images",
    "image_maps",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML mapping images to local commands (see examples/demo/local-images.yaml).",
)
def up(
    demo: bool,
    headless: bool,
    state_dir: Path,
    prefix: str,
    runtime_venv: Path,
    duration: float,
    image_maps: tuple[Path, ...],
) -> None:
    """Bring the local mesh up; Ctrl-C (or SIGTERM) tears everything down."""
    _require_root()
    if not (runtime_venv / "bin" / "python").exists():
        raise click.ClickException(
            f"no runtime venv at {runtime_venv}: run `make runtime` (make demo does it)"
        )
    if not images.runtime_venv_compiled(runtime_venv):
        click.echo(
            f"warning: {runtime_venv} has no bytecode: every proxy start compiles all it "
            "imports, slowly on a busy machine; `make runtime` compiles it",
            err=True,
        )
    layout = NodeLayout(prefix=prefix)
    node.create(layout)
    try:
        node.enter(layout)
        code = asyncio.run(
            _run(layout, state_dir, runtime_venv, demo, headless, duration, image_maps)
        )
    finally:
        removed = node.destroy(layout)
        click.echo(f"local mesh stopped; removed network namespaces: {len(removed)}", err=True)
    sys.exit(code)


async def _run(
    layout: NodeLayout,
    state_dir: Path,
    runtime_venv: Path,
    demo: bool,
    headless: bool,
    duration: float,
    image_maps: tuple[Path, ...],
) -> int:
    from gossamer_common.logging import configure_logging

    from gossamer_cli.dev import demo as demo_app
    from gossamer_cli.dev.mesh import LocalMesh, LocalMeshConfig

    table_shown = demo and not headless
    log_file = None
    if table_shown:
        # The table owns the terminal: this process's own log lines go to a file instead
        # (every component already writes its own under the state directory).
        (state_dir / "logs").mkdir(parents=True, exist_ok=True)
        log_path = state_dir / "logs" / DEV_LOG
        log_file = log_path.open("a", buffering=1, encoding="utf-8")
        click.echo(f"logs: {log_path} (components: {state_dir}/**/logs/)", err=True)
    configure_logging("info", component="gossamer-dev", stream=log_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if duration:
        loop.call_later(duration, stop.set)
    maps = (*image_maps, demo_app.image_map()) if demo else image_maps
    mesh = LocalMesh(LocalMeshConfig(state_dir, runtime_venv, maps, layout))
    try:
        await mesh.start()
        assert mesh.cluster is not None
        info = {
            "kubeconfig": str(mesh.cluster.kubeconfig),
            "node_netns": layout.node_netns,
            "node_address": layout.node_address,
            "prometheus_url": mesh.prometheus.url if mesh.prometheus is not None else None,
            "dashboard_url": mesh.dashboard.url if mesh.dashboard is not None else None,
            "tap_url": mesh.tap.url if mesh.tap is not None else None,
            "tap_ca_file": str(mesh.tap.ca_file) if mesh.tap is not None else None,
        }
        (state_dir / "ready.json").write_text(json.dumps(info))
        click.echo(
            f"local mesh is up. kubectl: sudo ip netns exec {layout.node_netns} "
            f"kubectl --kubeconfig {mesh.cluster.kubeconfig} get pods -A",
            err=True,
        )
        if mesh.prometheus is not None:
            click.echo(
                f"prometheus: {mesh.prometheus.url} in the node namespace; golden metrics: "
                f"sudo ip netns exec {layout.node_netns} gossamer viz stat deploy -n demo",
                err=True,
            )
        if mesh.tap is not None:
            click.echo(
                f"viz tap service: {mesh.tap.url} in the node namespace; live requests: "
                f"sudo ip netns exec {layout.node_netns} gossamer viz tap deploy/web -n demo",
                err=True,
            )
        if mesh.dashboard is not None:
            click.echo(
                f"viz dashboard: {mesh.dashboard.url} in the node namespace; on this machine: "
                "sudo gossamer viz dashboard",
                err=True,
            )
        if demo:
            await demo_app.deploy(mesh)
            if table_shown:
                screen = Screen(tty=sys.stdout.isatty())
                await demo_app.live_table(mesh, stop, lambda text: _draw(screen, text))
        await stop.wait()
        return 0
    finally:
        (state_dir / "ready.json").unlink(missing_ok=True)
        await mesh.stop()
        # log_file stays open: loggers cached on first use write to it until the process ends.


def _draw(screen: Screen, text: str) -> None:
    sys.stdout.write(screen.frame(text))
    sys.stdout.flush()


@dev.command("down")
@click.option("--state-dir", type=click.Path(path_type=Path), default=DEFAULT_STATE)
@click.option("--prefix", default="gsm")
def down(state_dir: Path, prefix: str) -> None:
    """Remove whatever a crashed local mesh left: processes, namespaces, files."""
    _require_root()
    from gossamer_kube.testing.cluster import KubeTestCluster

    layout = NodeLayout(prefix=prefix)
    stopped = KubeTestCluster.stop_detached(state_dir / "kube")
    # The control plane, the proxies and the apps run in their own sessions inside the node's
    # and the pods' namespaces; they outlive a `dev up` that was killed.
    others = node.stop_processes(layout)
    removed = node.destroy(layout)
    (state_dir / "ready.json").unlink(missing_ok=True)
    for pid_file in (state_dir / "control-plane").glob("*.pid"):
        pid_file.unlink(missing_ok=True)
    shutil.rmtree(state_dir / "node" / "pods", ignore_errors=True)
    click.echo(f"stopped {len(stopped) + len(others)} processes, removed {len(removed)} namespaces")


@dev.command("kubectl", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--state-dir", type=click.Path(path_type=Path), default=DEFAULT_STATE)
@click.option("--prefix", default="gsm")
def kubectl(args: tuple[str, ...], state_dir: Path, prefix: str) -> None:
    """kubectl against the local mesh's apiserver (inside its node namespace)."""
    _require_root()
    ready = state_dir / "ready.json"
    if not ready.exists():
        raise click.ClickException("the local mesh is not running (`gossamer dev up`)")
    info = json.loads(ready.read_text())
    argv = [
        "ip",
        "netns",
        "exec",
        info["node_netns"],
        kubectl_path(),
        "--kubeconfig",
        info["kubeconfig"],
    ]
    sys.exit(subprocess.call([*argv, *args]))


def kubectl_path() -> str:
    """The kubectl that ``make kube-bins`` builds at the cluster's version, else the PATH's."""
    from gossamer_kube.testing.binaries import KubeBinariesMissingError, locate_kubectl

    try:
        return str(locate_kubectl())
    except KubeBinariesMissingError as exc:
        found = shutil.which("kubectl")
        if found is None:
            raise click.ClickException(f"no kubectl: {exc} (`make kube-bins` builds one)") from exc
        return found


def register(cli: click.Group) -> None:
    cli.add_command(dev)
