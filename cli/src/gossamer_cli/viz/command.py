"""``gossamer viz``: the viz extension's commands (I/O only; the logic is in the pure modules).

The commands read Prometheus directly (``--prometheus-url``, or ``GOSSAMER_PROMETHEUS_URL``);
local mode's Prometheus answers on the node namespace's ``127.0.0.1:9090``. Meshed-pod counts
and the list of resources come from Kubernetes (``--kubeconfig``); without access to it the
figures are still shown, with ``-`` for MESHED.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

import click

from gossamer_cli.dev.command import DEFAULT_STATE
from gossamer_cli.viz import edges as edges_mod
from gossamer_cli.viz import stat as stat_mod
from gossamer_cli.viz.kubeobjects import kube_objects
from gossamer_cli.viz.meshed import Key, meshed_counts
from gossamer_cli.viz.promapi import PrometheusClient, PrometheusError, Sample
from gossamer_cli.viz.resources import Resource, parse_resource, resource_argument

DEFAULT_PROMETHEUS = "http://127.0.0.1:9090"

prometheus_option = click.option(
    "--prometheus-url",
    envvar="GOSSAMER_PROMETHEUS_URL",
    default=DEFAULT_PROMETHEUS,
    show_default=True,
    help="Prometheus that scrapes the proxies (the viz extension's).",
)
kubeconfig_option = click.option(
    "--kubeconfig", envvar="KUBECONFIG", default=None, help="Kubeconfig file to use."
)


@click.group("viz")
def viz() -> None:
    """The viz extension: golden metrics and the service graph, from Prometheus."""


def _client(url: str) -> PrometheusClient:
    try:
        return PrometheusClient(url)
    except PrometheusError as exc:
        raise click.BadParameter(str(exc), param_hint="--prometheus-url") from exc


def _query_all(client: PrometheusClient, queries: Mapping[str, str]) -> dict[str, list[Sample]]:
    try:
        return {key: client.query(q) for key, q in queries.items()}
    except PrometheusError as exc:
        raise click.ClickException(str(exc)) from exc


@viz.command("stat")
@click.argument("resource", nargs=-1, required=True)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-A", "--all-namespaces", is_flag=True, help="Every namespace.")
@click.option("--from", "from_text", default=None, help="Only traffic from this resource.")
@click.option("--from-namespace", default=None, help="Namespace of --from (default: -n).")
@click.option("--to", "to_text", default=None, help="Only traffic to this resource.")
@click.option("--to-namespace", default=None, help="Namespace of --to (default: -n).")
@click.option("-t", "--time-window", default="1m", show_default=True)
@click.option("-o", "--output", type=click.Choice(["table", "wide", "json"]), default="table")
@prometheus_option
@kubeconfig_option
def stat(
    resource: tuple[str, ...],
    namespace: str,
    all_namespaces: bool,
    from_text: str | None,
    from_namespace: str | None,
    to_text: str | None,
    to_namespace: str | None,
    time_window: str,
    output: str,
    prometheus_url: str,
    kubeconfig: str | None,
) -> None:
    """Success rate, RPS, latency and TCP connections of RESOURCE (e.g. `deploy`, `deploy/web`)."""
    target = resource_argument(resource)
    if from_text and to_text:
        raise click.UsageError("--from and --to cannot be combined")
    try:
        stat_mod.window_seconds(time_window)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--time-window") from exc
    # Namespaces are not inside a namespace: `stat ns` lists them all, as Linkerd's does.
    ns = None if all_namespaces or target.kind.name == "namespace" else namespace
    from_res = _named(from_text, "--from")
    to_res = _named(to_text, "--to")
    scope = stat_mod.stat_scope(
        target,
        ns,
        from_resource=from_res,
        from_namespace=from_namespace or namespace,
        to_resource=to_res,
        to_namespace=to_namespace or namespace,
    )
    queries = stat_mod.stat_queries(scope, time_window)
    answers = _query_all(_client(prometheus_url), queries)
    known: list[Key] = []
    meshed: dict[Key, tuple[int, int]] = {}
    if target.kind.name != "authority":
        try:
            view = asyncio.run(kube_objects(kubeconfig, [target.kind.name], ns))
        except Exception as exc:  # figures without MESHED beat no figures
            click.echo(f"warning: cannot read Kubernetes ({exc}); MESHED unknown", err=True)
        else:
            known = view.known.get(target.kind.name, [])
            meshed = meshed_counts(target.kind.name, view.pods, view.services)
            if target.name:
                known = [k for k in known if k[1] == target.name]
            if from_res is not None or to_res is not None:
                known = []  # only resources with traffic on the chosen edge
    rows = stat_mod.stat_rows(
        scope, target.kind.name, answers, time_window, known=known, meshed=meshed
    )
    if output == "json":
        click.echo(stat_mod.render_json(rows))
    else:
        click.echo(
            stat_mod.render_table(rows, wide=output == "wide", all_namespaces=all_namespaces)
        )


def _named(text: str | None, flag: str) -> Resource | None:
    if text is None:
        return None
    try:
        return parse_resource(text)
    except click.BadParameter as exc:
        raise click.BadParameter(str(exc.message), param_hint=flag) from exc


@viz.command("edges")
@click.argument("resource_type")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-A", "--all-namespaces", is_flag=True, help="Every namespace.")
@click.option("-o", "--output", type=click.Choice(["table", "wide", "json"]), default="table")
@prometheus_option
def edges(
    resource_type: str, namespace: str, all_namespaces: bool, output: str, prometheus_url: str
) -> None:
    """Connections between resources of RESOURCE_TYPE, and whether they are mTLS."""
    kind = parse_resource(resource_type).kind
    if kind.outbound_only:
        raise click.BadParameter(f"edges are between workloads, not {kind.name}s")
    queries = edges_mod.edges_queries(kind.label, None if all_namespaces else namespace)
    answers = _query_all(_client(prometheus_url), queries)
    found = edges_mod.build_edges(kind.label, answers)
    if output == "json":
        click.echo(edges_mod.render_json(found))
    else:
        click.echo(edges_mod.render_table(found, wide=output == "wide"))


def register(cli: click.Group) -> None:
    cli.add_command(viz)


@viz.command("install")
@click.option(
    "-L", "--gossamer-namespace", "control_plane_namespace", default="gossamer",
    show_default=True, help="Namespace of the Gossamer control plane.",
)  # fmt: skip
@click.option("--namespace", "viz_namespace", default="gossamer-viz", show_default=True)
@click.option("--prometheus-image", default=None, help="Prometheus image (upstream by default).")
@click.option("--scrape-interval", default="10s", show_default=True)
@click.option("--web-image", default=None, help="The dashboard's image (gossamer/viz-web).")
@click.option("--tap-image", default=None, help="The tap service's image (gossamer/viz-tap).")
@click.option("--cluster-domain", default="cluster.local", show_default=True)
@click.option("--identity-trust-domain", default="cluster.local", show_default=True)
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml")
def install(
    control_plane_namespace: str,
    viz_namespace: str,
    prometheus_image: str | None,
    scrape_interval: str,
    web_image: str | None,
    tap_image: str | None,
    cluster_domain: str,
    identity_trust_domain: str,
    output: str,
) -> None:
    """Print the viz extension's manifests, for `kubectl apply -f -`."""

    from gossamer_cli import manifests as m
    from gossamer_cli.viz import manifests as viz_manifests

    try:
        stat_mod.window_seconds(scrape_interval)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scrape-interval") from exc
    objects = viz_manifests.render(
        namespace=viz_namespace,
        control_plane_namespace=control_plane_namespace,
        prometheus_image=prometheus_image or viz_manifests.PROMETHEUS_IMAGE,
        scrape_interval=scrape_interval,
        web_image=web_image or viz_manifests.WEB_IMAGE,
        tap_image=tap_image or viz_manifests.TAP_IMAGE,
        cluster_domain=cluster_domain,
        trust_domain=identity_trust_domain,
    )
    if output == "json":
        click.echo(json.dumps(m.to_json_list(objects), indent=2))
    else:
        click.echo(m.to_yaml(objects), nl=False)


@viz.command("check")
@prometheus_option
def check(prometheus_url: str) -> None:
    """Check that the extension's Prometheus is up and scrapes the proxies."""
    from gossamer_cli.viz import health

    client = _client(prometheus_url)
    ready = client.ready()
    targets: list[Sample] | None = None
    if ready:
        try:
            targets = client.query(health.TARGETS_QUERY)
        except PrometheusError as exc:
            raise click.ClickException(str(exc)) from exc
    results = health.judge(prometheus_url, ready, targets)
    click.echo(health.render(results))
    if health.failed(results):
        raise SystemExit(1)


async def _profile_routes(
    kubeconfig: str | None, namespace: str, service: str | None
) -> dict[str, list[str]]:
    """Service name → its ServiceProfile's route names (profiles named ``<svc>.<ns>.svc.*``)."""
    from gossamer_kube.client import KubeClient
    from gossamer_kube.config import KubeConfig
    from gossamer_kube.resources import SERVICEPROFILES

    async with KubeClient(KubeConfig.load(kubeconfig)) as client:
        profiles, _ = await client.list(SERVICEPROFILES, namespace=namespace)
    found: dict[str, list[str]] = {}
    for profile in profiles:
        name = str(profile["metadata"]["name"])
        svc, _, rest = name.partition(".")
        if not rest.startswith(f"{namespace}.svc.") or (service and svc != service):
            continue
        routes = (profile.get("spec") or {}).get("routes") or []
        found[svc] = [str(r.get("name", "")) for r in routes if r.get("name")]
    return found


@viz.command("routes")
@click.argument("resource", nargs=-1, required=True)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--to", "to_text", default=None, help="Routes of this service (svc/NAME).")
@click.option("--to-namespace", default=None, help="Namespace of --to (default: -n).")
@click.option("-t", "--time-window", default="1m", show_default=True)
@click.option("-o", "--output", type=click.Choice(["table", "wide", "json"]), default="table")
@prometheus_option
@kubeconfig_option
def routes(
    resource: tuple[str, ...],
    namespace: str,
    to_text: str | None,
    to_namespace: str | None,
    time_window: str,
    output: str,
    prometheus_url: str,
    kubeconfig: str | None,
) -> None:
    """Per-route metrics of a Service's ServiceProfile (`svc/NAME`), or of a workload's calls
    (`deploy/NAME --to svc/OTHER`)."""
    from gossamer_cli.viz import routes as routes_mod

    target = resource_argument(resource)
    try:
        stat_mod.window_seconds(time_window)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--time-window") from exc
    to_res = _named(to_text, "--to")
    if to_res is not None and to_res.kind.name != "service":
        raise click.BadParameter("routes are per Service: use --to svc/NAME", param_hint="--to")
    client_labels: dict[str, str] = {}
    if target.kind.name == "service":
        if to_res is not None:
            raise click.UsageError("--to applies to a workload, not to a service")
        service, service_ns = target.name or None, namespace
    else:
        client_labels["namespace"] = namespace
        if target.name:
            client_labels[target.kind.label] = target.name
        service = to_res.name or None if to_res is not None else None
        service_ns = to_namespace or namespace
    selector = routes_mod.routes_selector(
        service=service, service_namespace=service_ns, client=client_labels
    )
    answers = _query_all(_client(prometheus_url), routes_mod.routes_queries(selector, time_window))
    try:
        profiles = asyncio.run(_profile_routes(kubeconfig, service_ns, service))
    except Exception as exc:  # routes seen in traffic are still worth showing
        click.echo(f"warning: cannot read ServiceProfiles ({exc})", err=True)
        profiles = {}
    rows = routes_mod.route_rows(answers, time_window, profile_routes=profiles)
    if output == "json":
        click.echo(routes_mod.render_json(rows))
    else:
        click.echo(routes_mod.render_table(rows))


@viz.command("uninstall")
@click.option(
    "-L", "--gossamer-namespace", "control_plane_namespace", default="gossamer",
    show_default=True, help="Namespace of the Gossamer control plane.",
)  # fmt: skip
@click.option("--namespace", "viz_namespace", default="gossamer-viz", show_default=True)
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml")
def uninstall(control_plane_namespace: str, viz_namespace: str, output: str) -> None:
    """Print the extension's objects for `kubectl delete --ignore-not-found -f -`."""

    from gossamer_cli import manifests as m
    from gossamer_cli.viz import manifests as viz_manifests

    rendered = viz_manifests.render(
        namespace=viz_namespace, control_plane_namespace=control_plane_namespace
    )
    # Cluster-wide objects first, the namespace (and everything in it) last.
    ordered = [o for o in rendered if o["kind"] != "Namespace"] + [
        o for o in rendered if o["kind"] == "Namespace"
    ]
    objects = []
    for obj in ordered:
        meta = {k: v for k, v in obj["metadata"].items() if k in ("name", "namespace")}
        objects.append({"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": meta})
    if output == "json":
        click.echo(json.dumps(m.to_json_list(objects), indent=2))
    else:
        click.echo(m.to_yaml(objects), nl=False)


@viz.command("dashboard")
@click.option("--address", default="localhost", show_default=True, help="Where to listen.")
@click.option("-p", "--port", default=50750, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--show", type=click.Choice(["browser", "url"]), default="browser", show_default=True,
    help="Open the dashboard in a browser (when one is available), or only print its URL.",
)  # fmt: skip
@click.option(
    "--state-dir", type=click.Path(path_type=Path), default=None,
    help="Local mode's state directory (default: gossamer dev's).",
)  # fmt: skip
def dashboard(address: str, port: int, show: str, state_dir: Path | None) -> None:
    """Open the viz dashboard: forwards ADDRESS:PORT here to the local mesh's dashboard."""
    ready = (state_dir or DEFAULT_STATE) / "ready.json"
    try:
        info = json.loads(ready.read_text())
    except (OSError, ValueError) as exc:
        raise click.ClickException(
            f"no local mesh at {ready.parent} ({exc}); start one with `gossamer dev up`. On a "
            "cluster: kubectl -n gossamer-viz port-forward svc/web 8084, then open "
            "http://localhost:8084"
        ) from exc
    url = info.get("dashboard_url")
    if not url:
        raise click.ClickException(
            "the local mesh runs no dashboard: it needs Prometheus (Debian's `prometheus`)"
        )
    if os.geteuid() != 0:
        raise click.ClickException(
            "reaching the local mesh's node namespace needs root: run it with sudo"
        )
    target = urllib.parse.urlsplit(url)
    if target.hostname is None or target.port is None:
        raise click.ClickException(f"bad dashboard URL in {ready}: {url!r}")
    netns = f"/run/netns/{info['node_netns']}"
    sys.exit(asyncio.run(_dashboard(netns, (target.hostname, target.port), address, port, show)))


async def _dashboard(
    netns: str, target: tuple[str, int], address: str, port: int, show: str
) -> int:
    import signal
    import webbrowser

    from gossamer_cli.viz.forward import NetnsConnector, forward

    connector = NetnsConnector(netns)
    try:
        await connector.check()
        try:
            server = await forward(connector, address, port, target)
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {address}:{port}: {exc}") from exc
        bound = server.sockets[0].getsockname()[1]
        host = f"[{address}]" if ":" in address else address
        url = f"http://{host}:{bound}"
        click.echo(f"Gossamer dashboard available at:\n{url}")
        if show == "browser":
            # Only a graphical session has a browser worth opening; a text-mode one would take
            # over the terminal.
            if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
                click.echo("Opening Gossamer dashboard in the default browser")
                webbrowser.open(url)
            else:
                click.echo("No browser available here: open the URL above.")
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()
        return 0
    finally:
        connector.close()


def _add_tap_commands() -> None:
    from gossamer_cli.viz.tap_cmd import tap, top

    viz.add_command(tap)
    viz.add_command(top)


_add_tap_commands()
