"""``gossamer viz tap`` and ``gossamer viz top`` (I/O; the logic is in the pure modules).

Where the viz tap service runs (:mod:`.tap_service`), the CLI asks it, proving its user with
the kubeconfig's credentials; the service checks that user may tap the resource, fans out
to the proxies and streams the events back. The service is found by ``--tap-url`` with
``--tap-ca-file`` (e.g. through ``kubectl -n gossamer-viz port-forward svc/tap 8089``), else
through the kubeconfig's apiserver when it serves the tap API (the viz install's
``v1alpha1.tap.linkerd.io`` APIService is Available), as Linkerd's CLI does, else in local
mode from the running mesh's ``ready.json`` in ``--state-dir`` (for that mesh's cluster
only). Reached directly (``--tap-url``, local mode), the service is shown the kubeconfig's
credentials, a bearer token too; through the apiserver, only the apiserver sees them.

Without a tap service the CLI is the tap service itself (local mode only): it lists the
resource's pods, signs itself a certificate for the viz tap identity with the local mesh's
issuer, and taps every pod's proxy directly (:mod:`.tap_client`). Either way, run it where
the addresses are reachable: in local mode, the node namespace
(``sudo ip netns exec <node> gossamer viz tap deploy/web -n demo``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gossamer_cli.dev.command import DEFAULT_STATE
from gossamer_cli.viz.resources import Resource, parse_resource, resource_argument
from gossamer_cli.viz.tap_query import TapFilters, TapTarget

CONTROL_PLANE_NAMESPACE = "gossamer"
APISERVER_PROBE_TIMEOUT = 10.0
TRUST_DOMAIN = "cluster.local"


def _options(func: Any) -> Any:
    options = [
        click.argument("resource", nargs=-1, required=True),
        click.option("-n", "--namespace", default="default", show_default=True),
        click.option("--to", "to_text", default=None, help="Only requests to this resource."),
        click.option("--to-namespace", default=None, help="Namespace of --to (default: -n)."),
        click.option("--method", default=None, help="Only requests with this HTTP method."),
        click.option("--path", default=None, help="Only requests whose path starts with this."),
        click.option("--authority", default=None, help="Only requests to this authority."),
        click.option(
            "--max-rps",
            type=float,
            default=100.0,
            show_default=True,
            help="Most requests a second to show (0: no limit).",
        ),
        click.option("--kubeconfig", envvar="KUBECONFIG", default=None),
        click.option(
            "--state-dir",
            envvar="GOSSAMER_STATE_DIR",
            type=click.Path(path_type=Path),
            default=DEFAULT_STATE,
            show_default=True,
            help="Local mode's state (its identity issuer signs the tap certificate).",
        ),
        click.option(
            "--tap-url",
            envvar="GOSSAMER_TAP_URL",
            default=None,
            help=(
                "The viz tap service (https://HOST:PORT), called directly: it is shown the "
                "kubeconfig's credentials, a bearer token too. Without it, the apiserver's "
                "tap API (APIService) is used, else local mode's (found in --state-dir)."
            ),
        ),
        click.option(
            "--tap-ca-file",
            envvar="GOSSAMER_TAP_CA_FILE",
            default=None,
            type=click.Path(dir_okay=False, path_type=Path),
            help="CA that signed the tap service's certificate (its tap-k8s-tls Secret's ca.crt).",
        ),
        click.option("--port", type=int, default=4190, show_default=True, hidden=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


async def _pods(
    kubeconfig: str | None, namespace: str, kind: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(pods of ``namespace``, its services, every pod for naming addresses)."""
    from gossamer_kube.client import KubeClient
    from gossamer_kube.config import KubeConfig
    from gossamer_kube.resources import PODS, SERVICES

    async with KubeClient(KubeConfig.load(kubeconfig)) as client:
        every, _ = await client.list(PODS, namespace=None)
        services: list[dict[str, Any]] = []
        if kind == "service":
            services, _ = await client.list(SERVICES, namespace=namespace)
    pods = [p for p in every if p["metadata"].get("namespace") == namespace]
    return pods, services, every


def _setup(
    resource: tuple[str, ...],
    namespace: str,
    to_text: str | None,
    to_namespace: str | None,
    method: str | None,
    path: str | None,
    authority: str | None,
) -> tuple[Resource, TapFilters]:
    target = resource_argument(resource)
    if target.kind.outbound_only and target.kind.name != "service":
        raise click.BadParameter(f"cannot tap a {target.kind.name}")
    to_res = None
    if to_text is not None:
        try:
            to_res = parse_resource(to_text)
        except click.BadParameter as exc:
            raise click.BadParameter(str(exc.message), param_hint="--to") from exc
    if path is not None and not path.startswith("/"):
        raise click.BadParameter("a path starts with /", param_hint="--path")
    filters = TapFilters(
        to=to_res,
        to_namespace=to_namespace or namespace,
        method=method,
        path=path,
        authority=authority,
    )
    return target, filters


def _targets(
    target: Resource, namespace: str, kubeconfig: str | None
) -> tuple[list[TapTarget], dict[str, Any]]:
    from gossamer_cli.viz.tap_query import tap_targets
    from gossamer_cli.viz.tap_render import pods_by_address

    try:
        pods, services, every = asyncio.run(_pods(kubeconfig, namespace, target.kind.name))
    except Exception as exc:
        raise click.ClickException(f"cannot read Kubernetes: {exc}") from exc
    targets = tap_targets(
        target,
        pods,
        services,
        control_plane_namespace=CONTROL_PLANE_NAMESPACE,
        trust_domain=TRUST_DOMAIN,
    )
    if not targets:
        name = f"{target.kind.name}/{target.name}" if target.name else target.kind.name
        raise click.ClickException(f"no meshed, running pods for {name} in namespace {namespace}")
    return targets, pods_by_address(every)


def _credentials(state_dir: Path) -> Any:
    from gossamer_cli.viz.tap_identity import local_tap_credentials, tap_identity

    identity = tap_identity(CONTROL_PLANE_NAMESPACE, TRUST_DOMAIN)
    try:
        return local_tap_credentials(state_dir, identity)
    except (OSError, ValueError) as exc:
        raise click.ClickException(
            f"no tap certificate: cannot use the local mesh's issuer in {state_dir} ({exc})"
        ) from exc


def _apiserver_endpoint(kubeconfig: str | None) -> Any:
    """The kubeconfig's apiserver when it serves the tap API (the APIService is Available),
    else None; bounded in time, and any failure to ask is a None."""
    from gossamer_kube.config import KubeConfig

    from gossamer_cli.viz.tap_service.client import TapServiceEndpoint, apiserver_serves_tap

    async def probe() -> bool:
        async with asyncio.timeout(APISERVER_PROBE_TIMEOUT):
            return await apiserver_serves_tap(config)

    try:
        config = KubeConfig.load(kubeconfig)
        serves = asyncio.run(probe())
    except Exception:
        return None
    return TapServiceEndpoint.apiserver(config) if serves else None


def _local_mesh_cluster(ready: dict[str, Any], kubeconfig: str | None) -> bool:
    """Whether the caller's kubeconfig names the local mesh's apiserver (ready.json's)."""
    from gossamer_kube.config import KubeConfig

    local = ready.get("kubeconfig")
    if not isinstance(local, str):
        return False
    try:
        return KubeConfig.load(kubeconfig).server == KubeConfig.from_kubeconfig(local).server
    except Exception:
        return False


def _endpoint(
    state_dir: Path,
    tap_url: str | None,
    tap_ca_file: Path | None,
    kubeconfig: str | None = None,
    apiserver: Callable[[str | None], Any] = _apiserver_endpoint,
) -> Any:
    """The tap service to ask, or None to tap the proxies directly (local mode without it).

    In order: ``--tap-url``; the kubeconfig's apiserver, as Linkerd's CLI, when the
    ``v1alpha1.tap.linkerd.io`` APIService is Available there; the local mesh's tap service
    (``ready.json``), only for the local mesh's own cluster. Only the first and the last
    present the kubeconfig's credentials (a bearer token too) to the tap service itself:
    through the apiserver they go to the apiserver, which names the user to the service."""
    from gossamer_cli.viz.tap_service.client import TapServiceEndpoint

    if tap_url is None:
        via_apiserver = apiserver(kubeconfig)
        if via_apiserver is not None:
            return via_apiserver
        try:
            ready = json.loads((state_dir / "ready.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(ready, dict) or not _local_mesh_cluster(ready, kubeconfig):
            return None
        tap_url, ca = ready.get("tap_url"), ready.get("tap_ca_file")
        if not isinstance(tap_url, str) or not isinstance(ca, str):
            return None
        tap_ca_file = Path(ca)
    if not tap_url.startswith("https://"):
        raise click.BadParameter(
            "the tap service is HTTPS: https://HOST:PORT", param_hint="--tap-url"
        )
    if tap_ca_file is None:
        raise click.UsageError(
            "--tap-url needs --tap-ca-file (the CA the tap service is trusted by)"
        )
    try:
        ca_pem = tap_ca_file.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read the tap service's CA: {exc}") from exc
    return TapServiceEndpoint(tap_url, ca_pem)


def _pod_names(kubeconfig: str | None) -> dict[str, Any]:
    """Pod names by address, for ``-o wide`` and top (what the caller may list; else none)."""
    from gossamer_kube.client import KubeClient
    from gossamer_kube.config import KubeConfig
    from gossamer_kube.resources import PODS

    from gossamer_cli.viz.tap_render import pods_by_address

    async def every() -> list[dict[str, Any]]:
        async with KubeClient(KubeConfig.load(kubeconfig)) as client:
            return (await client.list(PODS, namespace=None))[0]

    try:
        pods = asyncio.run(every())
    except Exception:
        return {}
    return dict(pods_by_address(pods))


async def _stream_service(
    endpoint: Any,
    kubeconfig: str | None,
    namespace: str,
    target: Resource,
    filters: TapFilters,
    *,
    max_rps: float,
    headers: bool,
    duration: float,
    on_event: Any,
) -> list[tuple[str, str]]:
    """Tap through the service; with ``duration`` 0, call again each time a call's bound ends."""
    from gossamer_kube.config import KubeConfig

    from gossamer_cli.viz.tap_service.api import MAX_EVENTS, MAX_SECONDS, TapQuery
    from gossamer_cli.viz.tap_service.client import TapServiceCall, TapServiceError

    config = KubeConfig.load(kubeconfig)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration if duration > 0 else None
    while True:
        left = MAX_SECONDS if deadline is None else min(deadline - loop.time(), MAX_SECONDS)
        if left < 0.1:
            return []
        query = TapQuery(filters, max_rps, left, MAX_EVENTS, headers)
        call = TapServiceCall(endpoint, config, namespace, target, query)
        try:
            async for source, event in call.events():
                on_event(source, event)
        except TapServiceError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            raise click.ClickException(f"cannot reach the tap service: {exc}") from exc
        if call.end is not None and call.end.reason == "proxies-ended":
            return call.errors
        if deadline is None and call.errors:
            _report(call.errors)


async def _stream(
    targets: list[TapTarget],
    filters: TapFilters,
    credentials: Any,
    *,
    port: int,
    max_rps: float,
    headers: bool,
    duration: float,
    on_event: Any,
) -> list[tuple[str, str]]:
    from gossamer_cli.viz.tap_client import TapSession
    from gossamer_cli.viz.tap_query import observe_request

    session = TapSession(
        targets,
        observe_request(filters, headers=headers),
        credentials,
        port=port,
        max_rps=max_rps,
    )

    async def consume() -> None:
        async for source, event in session.events():
            on_event(source, event)

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(duration if duration > 0 else None):
            await consume()
    return session.errors


def _report(errors: list[tuple[str, str]]) -> None:
    for pod, error in errors:
        click.echo(f"warning: cannot tap {pod}: {error}", err=True)


@click.command("tap")
@_options
@click.option("-o", "--output", type=click.Choice(["", "wide", "json"]), default="")
@click.option("--duration", type=float, default=0.0, help="Stop after N seconds (0: never).")
def tap(
    resource: tuple[str, ...],
    namespace: str,
    to_text: str | None,
    to_namespace: str | None,
    method: str | None,
    path: str | None,
    authority: str | None,
    max_rps: float,
    kubeconfig: str | None,
    state_dir: Path,
    tap_url: str | None,
    tap_ca_file: Path | None,
    port: int,
    output: str,
    duration: float,
) -> None:
    """Live requests of RESOURCE (e.g. `deploy/web`), as each of its proxies sees them."""
    from gossamer_cli.viz.tap_render import render_json, render_line

    target, filters = _setup(resource, namespace, to_text, to_namespace, method, path, authority)
    endpoint = _endpoint(state_dir, tap_url, tap_ca_file, kubeconfig)

    def show(source: str, event: Any) -> None:
        if output == "json":
            line: str | None = render_json(event, pods=names)
        else:
            line = render_line(event, wide=output == "wide", pods=names)
        if line is not None:
            click.echo(line)
            sys.stdout.flush()

    if endpoint is not None:
        names = _pod_names(kubeconfig)
        try:
            errors = asyncio.run(
                _stream_service(
                    endpoint,
                    kubeconfig,
                    namespace,
                    target,
                    filters,
                    max_rps=max_rps,
                    headers=output == "json",
                    duration=duration,
                    on_event=show,
                )
            )
        except KeyboardInterrupt:
            return
        _report(errors)
        if errors:  # every proxy's stream ended, and some could not be tapped
            raise SystemExit(1)
        return
    targets, names = _targets(target, namespace, kubeconfig)
    credentials = _credentials(state_dir)
    try:
        errors = asyncio.run(
            _stream(
                targets,
                filters,
                credentials,
                port=port,
                max_rps=max_rps,
                headers=output == "json",
                duration=duration,
                on_event=show,
            )
        )
    except KeyboardInterrupt:
        return
    _report(errors)
    if errors and len(errors) == len(targets):
        raise SystemExit(1)


@click.command("top")
@_options
@click.option(
    "--snapshot", type=float, default=0.0,
    help="Tap for N seconds, print the table once and exit (default: redraw live on a TTY).",
)  # fmt: skip
@click.option("--refresh", type=float, default=1.0, show_default=True, hidden=True)
def top(
    resource: tuple[str, ...],
    namespace: str,
    to_text: str | None,
    to_namespace: str | None,
    method: str | None,
    path: str | None,
    authority: str | None,
    max_rps: float,
    kubeconfig: str | None,
    state_dir: Path,
    tap_url: str | None,
    tap_ca_file: Path | None,
    port: int,
    snapshot: float,
    refresh: float,
) -> None:
    """Live table of RESOURCE's busiest paths, with latencies and success rates (from tap)."""
    from gossamer_cli.viz.top import TopTable

    target, filters = _setup(resource, namespace, to_text, to_namespace, method, path, authority)
    endpoint = _endpoint(state_dir, tap_url, tap_ca_file, kubeconfig)
    if endpoint is not None:
        targets: list[TapTarget] = []
        names, credentials = _pod_names(kubeconfig), None
    else:
        targets, names = _targets(target, namespace, kubeconfig)
        credentials = _credentials(state_dir)
    table = TopTable(pods=names)
    live = snapshot <= 0 and sys.stdout.isatty()
    if snapshot <= 0 and not live:
        snapshot = 10.0  # not a terminal: one table after a while, not an endless stream

    async def run() -> list[tuple[str, str]]:
        async def redraw() -> None:
            while True:
                await asyncio.sleep(refresh)
                # Home the cursor and clear: the table is redrawn in place.
                click.echo("\x1b[H\x1b[2J(press Ctrl-C to quit)\n" + table.render())

        painter = asyncio.ensure_future(redraw()) if live else None
        try:
            if endpoint is not None:
                return await _stream_service(
                    endpoint, kubeconfig, namespace, target, filters, max_rps=max_rps,
                    headers=False, duration=0.0 if live else snapshot,
                    on_event=lambda source, event: table.add(event, source),
                )  # fmt: skip
            return await _stream(
                targets,
                filters,
                credentials,
                port=port,
                max_rps=max_rps,
                headers=False,
                duration=0.0 if live else snapshot,
                on_event=lambda source, event: table.add(event, source),
            )
        finally:
            if painter is not None:
                painter.cancel()

    try:
        errors = asyncio.run(run())
    except KeyboardInterrupt:
        return
    if not live:
        click.echo(table.render())
    _report(errors)
