"""``gossamer version``: the client's version and, when a cluster answers, the control plane's.

The server version is the image tag of the control-plane deployments (those labelled
``linkerd.io/control-plane-component``) in the control-plane namespace, which is what
the Helm chart and ``gossamer install`` stamp. Any failure to reach the cluster is
reported on the ``server:`` line with its reason; the command itself still succeeds so
that it is usable offline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import click

from gossamer_cli import __version__

CONTROL_PLANE_COMPONENT_LABEL = "linkerd.io/control-plane-component"


def image_tag(image: str) -> str | None:
    """``registry:5000/gossamer/destination:0.1.0`` → ``0.1.0``; digests and bare names → None."""
    if "@" in image:
        return None
    _name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return None
    return tag


def server_versions(deployments: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Component name → version, read from each control-plane deployment's first container."""
    out: dict[str, str] = {}
    for d in deployments:
        component = d.get("metadata", {}).get("labels", {}).get(CONTROL_PLANE_COMPONENT_LABEL)
        containers = d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        if not component or not containers:
            continue
        tag = image_tag(str(containers[0].get("image", "")))
        if tag is not None:
            out[str(component)] = tag
    return out


async def _fetch_server_version(kubeconfig: str | None, namespace: str) -> str:
    from gossamer_kube.client import KubeClient
    from gossamer_kube.config import KubeConfig
    from gossamer_kube.resources import DEPLOYMENTS

    config = KubeConfig.load(kubeconfig)
    async with KubeClient(config) as client:
        items, _ = await client.list(
            DEPLOYMENTS, namespace=namespace, label_selector=CONTROL_PLANE_COMPONENT_LABEL
        )
    versions = server_versions(items)
    if not versions:
        raise LookupError(f"no control-plane deployments in namespace {namespace!r}")
    distinct = sorted(set(versions.values()))
    if len(distinct) == 1:
        return distinct[0]
    return "mixed (" + ", ".join(f"{c}={v}" for c, v in sorted(versions.items())) + ")"


@click.command("version")
@click.option("--client", "client_only", is_flag=True, help="Print only the client version.")
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Kubeconfig file to use.")
@click.option(
    "--namespace",
    "-n",
    "--gossamer-namespace",
    default="gossamer",
    show_default=True,
    help="Namespace of the control plane.",
)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for the server.")
def version(client_only: bool, kubeconfig: str | None, namespace: str, timeout: float) -> None:
    """Print the client and server versions."""
    click.echo(f"client: {__version__}")
    if client_only:
        return
    try:
        lookup = _fetch_server_version(kubeconfig, namespace)
        server = asyncio.run(asyncio.wait_for(lookup, timeout))
    except TimeoutError:
        click.echo(f"server: unavailable (no answer from the cluster within {timeout:g}s)")
    except Exception as e:  # any failure is reported, not raised: the client line is still useful
        reason = str(e) or type(e).__name__
        click.echo(f"server: unavailable ({reason})")
    else:
        click.echo(f"server: {server}")


def register(cli: click.Group) -> None:
    cli.add_command(version)
