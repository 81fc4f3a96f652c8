"""``gossamer authz [-n ns] RESOURCE``: the authorizations that apply to a workload.

Lists the namespace's Servers, AuthorizationPolicies, ServerAuthorizations, HTTPRoutes and
MeshTLS/Network authentications once, and the resource's pods, then prints the rows that
:mod:`gossamer_cli.authz` finds, with ``linkerd authz``'s columns.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from gossamer_cli import authz
from gossamer_cli import diagnostics_pods as dp


async def _list_or_empty(client: Any, ref: Any, namespace: str) -> list[dict[str, Any]]:
    """The objects of an optional kind (an API group that may not be installed)."""
    from gossamer_kube.errors import KubeApiError

    try:
        items, _ = await client.list(ref, namespace)
    except KubeApiError as exc:
        if exc.status == 404:
            return []
        raise
    return list(items)


async def _policy_objects(client: Any, namespace: str) -> authz.PolicyObjects:
    from gossamer_kube.errors import KubeApiError
    from gossamer_kube.resources import (
        AUTHORIZATIONPOLICIES,
        GATEWAY_HTTPROUTES,
        HTTPROUTES,
        MESHTLSAUTHENTICATIONS,
        NAMESPACES,
        NETWORKAUTHENTICATIONS,
        SERVERAUTHORIZATIONS,
        SERVERS,
    )

    try:
        servers, _ = await client.list(SERVERS, namespace)
    except KubeApiError as exc:
        if exc.status == 404:
            raise click.ClickException(
                "the policy.linkerd.io CRDs are not installed "
                "(`gossamer install --crds | kubectl apply -f -`)"
            ) from None
        raise
    try:
        ns = await client.get(NAMESPACES, namespace)
    except KubeApiError as exc:
        if exc.status == 404:
            raise click.ClickException(f'namespace "{namespace}" not found') from None
        raise
    return authz.PolicyObjects(
        servers=servers,
        authorization_policies=await _list_or_empty(client, AUTHORIZATIONPOLICIES, namespace),
        server_authorizations=await _list_or_empty(client, SERVERAUTHORIZATIONS, namespace),
        http_routes=[
            *await _list_or_empty(client, HTTPROUTES, namespace),
            *await _list_or_empty(client, GATEWAY_HTTPROUTES, namespace),
        ],
        meshtls_authentications=await _list_or_empty(client, MESHTLSAUTHENTICATIONS, namespace),
        network_authentications=await _list_or_empty(client, NETWORKAUTHENTICATIONS, namespace),
        namespace=ns,
    )


async def _gather(
    kubeconfig: str | None, namespace: str, resource: str
) -> tuple[list[dict[str, Any]], authz.PolicyObjects]:
    from gossamer_kube.client import KubeClient
    from gossamer_kube.config import KubeConfig
    from gossamer_kube.errors import KubeApiError

    try:
        config = KubeConfig.load(kubeconfig)
    except Exception as exc:
        raise click.ClickException(f"cannot load kubeconfig: {exc}") from None
    async with KubeClient(config) as client:
        try:
            objects = await _policy_objects(client, namespace)
            pods = await dp.pods_for(client, namespace, resource)
        except KubeApiError as exc:
            if exc.status == 404:
                raise click.ClickException(
                    f"{resource} not found in namespace {namespace}"
                ) from None
            raise click.ClickException(str(exc)) from None
    return pods, objects


@click.command("authz")
@click.argument("resource")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option(
    "-o", "--output", type=click.Choice(["table", "wide", "json"]), default="table",
    show_default=True, help="wide adds the authentications each authorization requires.",
)  # fmt: skip
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Kubeconfig file to use.")
def authz_command(resource: str, namespace: str, output: str, kubeconfig: str | None) -> None:
    """List the authorizations that apply to RESOURCE (TYPE/NAME, e.g. deploy/web)."""
    try:
        dp.parse_resource(resource)  # a bad argument fails before any connection
    except dp.ResourceError as exc:
        raise click.BadParameter(str(exc), param_hint="RESOURCE") from None
    pods, objects = asyncio.run(_gather(kubeconfig, namespace, resource))
    if not pods:
        raise click.ClickException(f"{resource} in namespace {namespace} has no pods")
    try:
        rows = authz.authorizations(pods, objects, namespace)
    except authz.SelectorError as exc:
        raise click.ClickException(
            f"a Server or ServerAuthorization has a bad selector: {exc}"
        ) from None
    if output == "json":
        click.echo(authz.render_json(rows))
    else:
        click.echo(authz.render_table(rows, wide=output == "wide"))


def register(cli: click.Group) -> None:
    cli.add_command(authz_command)
