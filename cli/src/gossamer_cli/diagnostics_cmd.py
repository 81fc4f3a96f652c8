"""``gossamer diagnostics``: Linkerd's debugging commands (``linkerd diagnostics``).

- ``proxy-metrics [-n NS] [--obfuscate] RESOURCE``: each pod's raw proxy ``/metrics``, under
  a ``# POD name (i of n)`` header, as Linkerd prints them.
- ``endpoints [-o table|json] [--token T] AUTHORITY...``: what ``Destination.Get`` answers
  (``NAMESPACE IP PORT POD SERVICE``).
- ``profile [--token T] ADDRESS``: the first ``Destination.GetProfile`` answer, as JSON.
- ``policy [-n NS] [--token T] [-o yaml|json] RESOURCE PORT``: ``po/NAME`` asks the inbound
  policy API (``GetPort``) for the pod's port, ``svc/NAME`` the outbound one (``Get``) for the
  Service's port.

Linkerd port-forwards to the control plane and to pods. Gossamer dials them directly:
``--api-addr`` names the destination (or, for ``policy``, the policy) gRPC server; without
it, local mode's addresses are read from the control plane's ``gossamer-config`` ConfigMap.
Proxies are reached at their pod IP's admin port, which works in local mode and from inside
the cluster network; elsewhere use ``kubectl port-forward`` and ``--api-addr``.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import click
import grpc
import yaml
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from gossamer_api.addresses import tcp_address_from_proto
from gossamer_api.proxy import (
    destination_pb2,
    destination_pb2_grpc,
    inbound_pb2,
    inbound_pb2_grpc,
    outbound_pb2,
    outbound_pb2_grpc,
)

from gossamer_cli import diagnostics_pods as dp
from gossamer_cli import manifests as m

__all__ = [
    "EndpointRow",
    "endpoint_rows",
    "local_grpc_address_annotation",
    "register",
    "render_endpoints",
    "render_proxy_metrics",
]

DEFAULT_SOURCE_WORKLOAD: Final = "default:diagnostics"
#: Bounds on what one answer may cost: the first stream message, and a metrics body.
GRPC_TIMEOUT: Final = 10.0
MAX_METRICS_BYTES: Final = 64 << 20


def local_grpc_address_annotation(server: str) -> str:
    """Where local mode records a gRPC server's address (``destination`` or ``policy``)."""
    return f"gossamer.dev/{server}-grpc-address"


# -- pure rendering ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndpointRow:
    namespace: str
    ip: str
    port: int
    pod: str
    service: str


def endpoint_rows(updates: Sequence[destination_pb2.Update]) -> list[EndpointRow]:
    """Linkerd's rows: one per address of each ``add``, sorted by namespace then service."""
    rows: list[EndpointRow] = []
    for update in updates:
        if update.WhichOneof("update") != "add":
            continue
        labels = update.add.metric_labels
        namespace = labels.get("namespace", "")
        service = f"{labels.get('service', '')}.{namespace}"
        for addr in update.add.addrs:
            ip, port = tcp_address_from_proto(addr.addr)
            pod = addr.metric_labels.get("pod", "")
            rows.append(EndpointRow(namespace, str(ip), port, pod.rsplit("/", 1)[-1], service))
    return sorted(rows, key=lambda r: (r.namespace, r.service))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], padding: int = 3) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [c.ljust(w + padding) for c, w in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("".join(cells) + row[-1])
    return "\n".join(lines) + "\n"


def render_endpoints(rows: Sequence[EndpointRow], output: str) -> str:
    if output == "json":
        entries = [
            {
                "namespace": r.namespace,
                "ip": r.ip,
                "port": r.port,
                "pod": r.pod,
                "service": r.service,
            }
            for r in rows
        ]
        return json.dumps(entries, indent=2) + "\n"
    tables = []
    for namespace in sorted({r.namespace for r in rows}):
        body = [
            (r.namespace, r.ip, str(r.port), r.pod, r.service)
            for r in rows
            if r.namespace == namespace
        ]
        tables.append(_table(("NAMESPACE", "IP", "PORT", "POD", "SERVICE"), body))
    return "\n".join(tables)


@dataclass(frozen=True, slots=True)
class MetricsResult:
    pod: str
    metrics: str | None
    error: str | None


def render_proxy_metrics(results: Sequence[MetricsResult], *, obfuscate: bool) -> str:
    out = []
    for i, result in enumerate(sorted(results, key=lambda r: r.pod)):
        out.append(f"#\n# POD {result.pod} ({i + 1} of {len(results)})\n#\n")
        if result.error is not None:
            out.append(f"# ERROR {result.error}\n")
        else:
            text = result.metrics or ""
            out.append(dp.obfuscate_metrics(text) if obfuscate else text)
    return "".join(out)


def _message_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


# -- I/O ---------------------------------------------------------------------------------


async def _kube(kubeconfig: str | None, call: Callable[[Any], Any]) -> Any:
    from gossamer_kube.client import KubeClient
    from gossamer_kube.config import KubeConfig
    from gossamer_kube.errors import KubeApiError

    try:
        config = KubeConfig.load(kubeconfig)
    except Exception as exc:
        raise click.ClickException(f"cannot load kubeconfig: {exc}") from None
    async with KubeClient(config) as client:
        try:
            return await call(client)
        except KubeApiError as exc:
            raise click.ClickException(str(exc)) from None
        except dp.ResourceError as exc:
            raise click.BadParameter(str(exc), param_hint="RESOURCE") from None


def _api_addr(api_addr: str | None, server: str, kubeconfig: str | None, cp_ns: str) -> str:
    if api_addr:
        return api_addr
    from gossamer_kube.resources import CONFIGMAPS

    async def read(client: Any) -> Any:
        return await client.get(CONFIGMAPS, m.CONFIG_MAP, cp_ns)

    config_map = asyncio.run(_kube(kubeconfig, read))
    annotations: Mapping[str, str] = (config_map.get("metadata") or {}).get("annotations") or {}
    found = annotations.get(local_grpc_address_annotation(server))
    if not found:
        raise click.ClickException(
            f"no {server} address known: pass --api-addr HOST:PORT (for example after "
            f"`kubectl -n {cp_ns} port-forward deploy/gossamer-destination "
            f"{8090 if server == 'policy' else 8086}`)"
        )
    return found


def _first(stream: Any, what: str) -> Any:
    try:
        for message in stream:
            return message
    except grpc.RpcError as exc:
        raise click.ClickException(
            f"{what} API error: {exc.code().name}: {exc.details()}"
        ) from None
    finally:
        stream.cancel()
    raise click.ClickException(f"{what} API closed the stream without an answer")


def _fetch_metrics(target: dp.AdminTarget, timeout: float) -> MetricsResult:
    if target.error is not None or target.host is None:
        return MetricsResult(target.pod, None, target.error or "no address")
    host = f"[{target.host}]" if ":" in target.host else target.host
    url = f"http://{host}:{target.port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as rsp:
            body = rsp.read(MAX_METRICS_BYTES + 1)
    except (urllib.error.URLError, OSError) as exc:
        return MetricsResult(target.pod, None, f"GET {url}: {exc}")
    if len(body) > MAX_METRICS_BYTES:
        return MetricsResult(target.pod, None, f"GET {url}: more than {MAX_METRICS_BYTES} bytes")
    return MetricsResult(target.pod, body.decode("utf-8", "replace"), None)


# -- commands ----------------------------------------------------------------------------

_kubeconfig_option = click.option(
    "--kubeconfig", envvar="KUBECONFIG", default=None, help="Kubeconfig file to use."
)
_cp_ns_option = click.option(
    "-L",
    "--gossamer-namespace",
    "cp_ns",
    default="gossamer",
    show_default=True,
    help="Namespace of the control plane.",
)
_api_addr_option = click.option(
    "--api-addr",
    default=None,
    help="Talk to the control plane's gRPC server at HOST:PORT instead of looking it up.",
)
_token_option = click.option(
    "--token",
    default="",
    help="The context token to use when making the request to the destination API.",
)


@click.group("diagnostics")
def diagnostics() -> None:
    """Commands used to diagnose Gossamer components."""


@diagnostics.command("proxy-metrics")
@click.argument("resource")
@click.option(
    "-n", "--namespace", default="default", show_default=True, help="Namespace of resource"
)
@click.option("--obfuscate", is_flag=True, help="Obfuscate sensitive information")
@click.option("--timeout", default=30.0, show_default=True, help="Per-pod timeout (s).")
@_kubeconfig_option
def proxy_metrics(
    resource: str, namespace: str, obfuscate: bool, timeout: float, kubeconfig: str | None
) -> None:
    """Fetch metrics directly from the proxies of RESOURCE (TYPE/NAME, e.g. deploy/web)."""
    dp.parse_resource(resource)  # a bad argument fails before any connection

    async def pods(client: Any) -> list[dict[str, Any]]:
        return await dp.pods_for(client, namespace, resource)

    found = asyncio.run(_kube(kubeconfig, pods))
    results = [_fetch_metrics(dp.admin_target(p), timeout) for p in found]
    click.echo(render_proxy_metrics(results, obfuscate=obfuscate), nl=False)


@diagnostics.command("endpoints")
@click.argument("authorities", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@_token_option
@_api_addr_option
@_cp_ns_option
@_kubeconfig_option
def endpoints(
    authorities: tuple[str, ...],
    output: str,
    token: str,
    api_addr: str | None,
    cp_ns: str,
    kubeconfig: str | None,
) -> None:
    """Introspect Gossamer's service discovery state (Destination.Get for each AUTHORITY)."""
    addr = _api_addr(api_addr, "destination", kubeconfig, cp_ns)
    updates = []
    with grpc.insecure_channel(addr) as channel:
        stub = destination_pb2_grpc.DestinationStub(channel)
        for authority in authorities:
            request = destination_pb2.GetDestination(
                scheme="http:", path=authority, context_token=token
            )
            updates.append(_first(stub.Get(request, timeout=GRPC_TIMEOUT), "Destination"))
    rows = endpoint_rows(updates)
    if not rows and output == "table":
        click.echo("No endpoints found.", err=True)
        return
    click.echo(render_endpoints(rows, output), nl=False)


@diagnostics.command("profile")
@click.argument("address")
@_token_option
@_api_addr_option
@_cp_ns_option
@_kubeconfig_option
def profile(
    address: str, token: str, api_addr: str | None, cp_ns: str, kubeconfig: str | None
) -> None:
    """Introspect the service profile for ADDRESS (Destination.GetProfile), as JSON."""
    addr = _api_addr(api_addr, "destination", kubeconfig, cp_ns)
    with grpc.insecure_channel(addr) as channel:
        stub = destination_pb2_grpc.DestinationStub(channel)
        request = destination_pb2.GetDestination(path=address, context_token=token)
        answer = _first(stub.GetProfile(request, timeout=GRPC_TIMEOUT), "Destination")
    click.echo(json.dumps(_message_dict(answer), indent=2))


@diagnostics.command("policy")
@click.argument("resource")
@click.argument("port", type=click.IntRange(1, 65535))
@click.option(
    "-n", "--namespace", default="default", show_default=True, help="Namespace of resource"
)
@click.option(
    "--token",
    default=DEFAULT_SOURCE_WORKLOAD,
    show_default=True,
    help="Token for the outbound policy API (the client workload, ns:name).",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
    help="Output format.",
)
@_api_addr_option
@_cp_ns_option
@_kubeconfig_option
def policy(
    resource: str,
    port: int,
    namespace: str,
    token: str,
    output: str,
    api_addr: str | None,
    cp_ns: str,
    kubeconfig: str | None,
) -> None:
    """Introspect the policy for RESOURCE (po/NAME: inbound, svc/NAME: outbound) on PORT."""
    kind, sep, name = resource.partition("/")
    kind = kind.lower()
    if not sep or not name or kind not in ("po", "pod", "pods", "svc", "service", "services"):
        raise click.BadParameter(
            f"{resource!r}: expected po/NAME (inbound) or svc/NAME (outbound)",
            param_hint="RESOURCE",
        )
    addr = _api_addr(api_addr, "policy", kubeconfig, cp_ns)
    answer: Message
    with grpc.insecure_channel(addr) as channel:
        try:
            if kind.startswith("po"):
                workload = json.dumps({"ns": namespace, "pod": name}, separators=(",", ":"))
                inbound = inbound_pb2_grpc.InboundServerPoliciesStub(channel)
                answer = inbound.GetPort(
                    inbound_pb2.PortSpec(workload=workload, port=port), timeout=GRPC_TIMEOUT
                )
            else:
                outbound = outbound_pb2_grpc.OutboundPoliciesStub(channel)
                spec = outbound_pb2.TrafficSpec(
                    source_workload=token,
                    authority=f"{name}.{namespace}.svc.cluster.local:{port}",
                )
                answer = outbound.Get(spec, timeout=GRPC_TIMEOUT)
        except grpc.RpcError as exc:
            raise click.ClickException(
                f"policy API error: {exc.code().name}: {exc.details()}"
            ) from None
    doc = _message_dict(answer)
    if output == "json":
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(yaml.safe_dump(doc, sort_keys=False), nl=False)


def register(group: click.Group) -> None:
    group.add_command(diagnostics)
