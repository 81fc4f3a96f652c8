"""``gossamer jaeger``: install, uninstall and check the tracing extension (I/O only)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from gossamer_cli.jaeger import manifests as jm


@click.group("jaeger")
def jaeger() -> None:
    """The jaeger extension: a trace collector and Jaeger for the proxies' spans."""


def register(cli: click.Group) -> None:
    cli.add_command(jaeger)


def _values(set_values: tuple[str, ...]) -> jm.JaegerValues:
    from gossamer_cli.manifests_values import ValuesError, parse_set

    try:
        return jm.values_from(parse_set(set_values))
    except (ValuesError, jm.JaegerValuesError) as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from exc


def _echo(objects: list[dict[str, Any]], output: str) -> None:
    from gossamer_cli import manifests as m

    if output == "json":
        click.echo(json.dumps(m.to_json_list(objects), indent=2))
    else:
        click.echo(m.to_yaml(objects), nl=False)


set_option = click.option(
    "--set",
    "set_values",
    multiple=True,
    metavar="KEY=VALUE",
    help="A value (Helm syntax), e.g. --set collector.address=otel.tracing:4317.",
)
output_option = click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml")


@jaeger.command("install")
@set_option
@output_option
def install(set_values: tuple[str, ...], output: str) -> None:
    """Print the extension's manifests, for `kubectl apply -f -`.

    Proxies trace once their namespace (or pod) names the collector:
    `kubectl annotate ns NS config.linkerd.io/trace-collector=collector.gossamer-jaeger:4317`,
    then restart the workloads.
    """
    values = _values(set_values)
    _echo(jm.render(values), output)
    click.echo(
        "# proxies trace where config.linkerd.io/trace-collector="
        f"{values.proxy_collector_address} is set on the namespace or pod",
        err=True,
    )


@jaeger.command("uninstall")
@set_option
@output_option
def uninstall(set_values: tuple[str, ...], output: str) -> None:
    """Print the extension's objects for `kubectl delete --ignore-not-found -f -`."""
    _echo(jm.uninstall_objects(_values(set_values)), output)


async def _cluster_state(
    kubeconfig: str | None, values: jm.JaegerValues
) -> tuple[bool, dict[str, dict[str, Any] | None], list[dict[str, Any]]]:
    from gossamer_kube.client import KubeClient
    from gossamer_kube.config import KubeConfig
    from gossamer_kube.errors import KubeApiError
    from gossamer_kube.resources import DEPLOYMENTS, NAMESPACES, PODS

    names = [n for n, on in (("collector", values.collector_enabled),
                              ("jaeger", values.jaeger_enabled)) if on]  # fmt: skip
    async with KubeClient(KubeConfig.load(kubeconfig)) as client:
        try:
            await client.get(NAMESPACES, values.namespace)
        except KubeApiError as exc:
            if exc.status != 404:
                raise
            return False, {}, []
        deployments: dict[str, dict[str, Any] | None] = {}
        for name in names:
            try:
                deployments[name] = await client.get(DEPLOYMENTS, name, values.namespace)
            except KubeApiError as exc:
                if exc.status != 404:
                    raise
                deployments[name] = None
        pods, _ = await client.list(PODS)
    return True, deployments, pods


@jaeger.command("check")
@set_option
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Kubeconfig file to use.")
def check(set_values: tuple[str, ...], kubeconfig: str | None) -> None:
    """Check that the collector and Jaeger run, and that some proxies trace."""
    from gossamer_kube.errors import KubeError

    from gossamer_cli.jaeger import health

    values = _values(set_values)
    try:
        found, deployments, pods = asyncio.run(_cluster_state(kubeconfig, values))
    except (KubeError, OSError) as exc:
        raise click.ClickException(f"cannot read the cluster: {exc}") from exc
    results = health.judge(values.namespace, found, deployments, pods)
    click.echo(health.render(results))
    if any(not r.ok and not r.warning for r in results):
        raise SystemExit(1)
