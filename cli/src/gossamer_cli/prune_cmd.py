"""``gossamer prune``: print what :mod:`gossamer_cli.prune` finds, for ``kubectl delete -f -``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from gossamer_cli import install, prune
from gossamer_cli.manifests_values import ValuesError


async def _found(kubeconfig: str | None, namespace: str) -> list[tuple[Any, dict[str, Any]]]:
    from gossamer_kube.client import KubeClient
    from gossamer_kube.config import KubeConfig
    from gossamer_kube.errors import KubeError

    try:
        config = KubeConfig.load(kubeconfig)
    except Exception as exc:
        raise click.ClickException(f"cannot load kubeconfig: {exc}") from None
    async with KubeClient(config) as client:
        try:
            return await prune.list_labelled(client, namespace)
        except KubeError as exc:
            raise click.ClickException(f"cannot list the cluster's objects: {exc}") from None


@click.command("prune")
@install._values_options
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Kubeconfig file to use.")
def prune_command(
    namespace: str,
    output: str,
    ha: bool,
    value_files: tuple[Path, ...],
    sets: tuple[str, ...],
    kubeconfig: str | None,
) -> None:
    """Print control-plane objects the install no longer renders (for kubectl delete -f -)."""
    try:
        rendered = install.render(
            namespace=namespace, ha=ha, value_files=value_files, sets=sets,
            certs=install.PLACEHOLDER_CERTS,
        )  # fmt: skip
    except ValuesError as exc:
        raise click.ClickException(str(exc)) from exc
    found = asyncio.run(_found(kubeconfig, namespace))
    install._emit(prune.extraneous(rendered, found), output)


def register(cli: click.Group) -> None:
    cli.add_command(prune_command)
