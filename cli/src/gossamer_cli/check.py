"""``gossamer check [--pre|--proxy]``: read the cluster once, judge it with :mod:`check_rules`.

Exit status 0 when nothing failed (warnings allowed), 1 otherwise; the output names each
failing check with its reason and remedy, in Linkerd's categories.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

import click
from gossamer_kube.external_workload import InvalidExternalWorkloadError, parse_external_workload

from gossamer_cli import __version__
from gossamer_cli import check_rules as rules
from gossamer_cli import manifests as m

T = TypeVar("T")
# Linkerd's marks: check mark, double exclamation, multiplication sign.
OK_MARK, WARN_MARK, FAIL_MARK = "\u221a", "\u203c", "\u00d7"
EXPECTED_CRD_FALLBACK = (
    "serviceprofiles.linkerd.io",
    "servers.policy.linkerd.io",
    "authorizationpolicies.policy.linkerd.io",
    "meshtlsauthentications.policy.linkerd.io",
    "networkauthentications.policy.linkerd.io",
    "httproutes.policy.linkerd.io",
)


def expected_crds() -> tuple[str, ...]:
    """The CRDs of the gossamer-crds chart this CLI ships with."""
    try:
        return tuple(sorted(str(c["metadata"]["name"]) for c in m.crds()))
    except Exception:  # charts not available (installed without a checkout): the core set
        return EXPECTED_CRD_FALLBACK


async def snapshot(
    kubeconfig: str | None,
    namespace: str,
    *,
    pre: bool,
    proxy: bool,
    data_plane_namespace: str | None,
) -> rules.Snapshot:
    """Read everything the rules look at; a read that fails is recorded, never raised."""
    from gossamer_kube.client import KubeClient
    from gossamer_kube.config import KubeConfig
    from gossamer_kube.errors import KubeApiError
    from gossamer_kube.resources import (
        CONFIGMAPS,
        CUSTOMRESOURCEDEFINITIONS,
        DEPLOYMENTS,
        MUTATINGWEBHOOKCONFIGURATIONS,
        NAMESPACES,
        PODS,
        SECRETS,
        SERVICEACCOUNTS,
        SERVICES,
    )

    s = rules.Snapshot(namespace=namespace, cli_version=__version__)
    try:
        config = KubeConfig.load(kubeconfig)
    except Exception as exc:
        s.config_error = str(exc) or type(exc).__name__
        return s

    async with KubeClient(config) as client:

        async def get(key: str, call: Callable[[], Awaitable[T]]) -> T | None:
            try:
                return await call()
            except KubeApiError as exc:
                if exc.status != 404:
                    s.errors[key] = f"{exc.status} {exc.reason}: {exc.message}"
                return None

        try:
            version = await client.request("GET", "/version")
            s.server_version = str(version.get("gitVersion", ""))
        except Exception as exc:
            s.client_error = str(exc) or type(exc).__name__
            return s

        s.namespace_object = await get("namespace", lambda: client.get(NAMESPACES, namespace))
        if pre:
            for verb, resource in rules.PRE_ACCESS:
                s.access[f"{verb} {resource}"] = await _can(client, verb, resource, namespace)
            return s
        s.expected_crds = expected_crds()
        crds = await get("crds", lambda: client.list(CUSTOMRESOURCEDEFINITIONS))
        s.crd_names = frozenset(c["metadata"]["name"] for c in (crds[0] if crds else []))
        s.crd_versions = {
            str(c["metadata"]["name"]): tuple(
                str(v.get("name"))
                for v in (c.get("spec") or {}).get("versions") or ()
                if v.get("served")
            )
            for c in (crds[0] if crds else [])
        }
        for crd in (
            c for c in (crds[0] if crds else []) if c["metadata"]["name"] in rules.UNENFORCED_CRDS
        ):
            s.unenforced_objects[crd["metadata"]["name"]] = await _count_objects(client, crd, get)
        for crd in (
            c
            for c in (crds[0] if crds else [])
            if c["metadata"]["name"] == rules.EXTERNAL_WORKLOADS_CRD
        ):
            s.invalid_external_workloads = invalid_external_workloads(
                await _list_objects(client, crd, get)
            )
        for crd in (
            c
            for c in (crds[0] if crds else [])
            if c["metadata"]["name"] in rules.UNENFORCED_MESH_ROUTES
        ):
            name = crd["metadata"]["name"]
            parents = rules.UNENFORCED_MESH_ROUTES[name].parents
            routes = await _list_objects(client, crd, get)
            s.unenforced_routes[name] = sum(rules.has_parent(r, parents) for r in routes)
        s.webhook = await get(
            "webhook",
            lambda: client.get(
                MUTATINGWEBHOOKCONFIGURATIONS, f"{namespace}-proxy-injector-webhook-config"
            ),
        )
        selector = f"linkerd.io/control-plane-ns={namespace}"
        roles = await get(
            "clusterroles",
            lambda: client.request(
                "GET",
                "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                params={"labelSelector": selector},
            ),
        )
        s.cluster_roles = frozenset(r["metadata"]["name"] for r in (roles or {}).get("items", []))
        bindings = await get(
            "clusterrolebindings",
            lambda: client.request(
                "GET",
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                params={"labelSelector": selector},
            ),
        )
        s.cluster_role_bindings = frozenset(
            r["metadata"]["name"] for r in (bindings or {}).get("items", [])
        )
        if s.namespace_object is None:
            return s
        ns = namespace
        s.config_map = await get("config", lambda: client.get(CONFIGMAPS, m.CONFIG_MAP, ns))
        addresses = rules.local_admin_addresses(s.config_map) or {}
        for component, address in addresses.items():
            if address:
                s.admin_ready[component] = await probe_ready(address)
        s.trust_roots = await get(
            "trust-roots", lambda: client.get(CONFIGMAPS, m.TRUST_ROOTS_CONFIG_MAP, ns)
        )
        s.issuer_secret = await get("issuer", lambda: client.get(SECRETS, m.ISSUER_SECRET, ns))
        s.injector_secret = await get(
            "injector-tls", lambda: client.get(SECRETS, m.INJECTOR_TLS_SECRET, ns)
        )
        sas = await get("serviceaccounts", lambda: client.list(SERVICEACCOUNTS, ns))
        s.service_accounts = frozenset(x["metadata"]["name"] for x in (sas[0] if sas else []))
        svcs = await get("services", lambda: client.list(SERVICES, ns))
        s.services = frozenset(x["metadata"]["name"] for x in (svcs[0] if svcs else []))
        component = "linkerd.io/control-plane-component"
        deploys = await get(
            "deployments", lambda: client.list(DEPLOYMENTS, ns, label_selector=component)
        )
        s.deployments = tuple(deploys[0] if deploys else [])
        pods = await get("pods", lambda: client.list(PODS, ns, label_selector=component))
        s.control_plane_pods = tuple(pods[0] if pods else [])
        if proxy:
            s.data_plane_namespace = data_plane_namespace
            if data_plane_namespace is not None:
                exists = await get(
                    "data-plane-namespace",
                    lambda: client.get(NAMESPACES, data_plane_namespace),
                )
                s.data_plane_namespace_exists = exists is not None
            meshed = await get(
                "data-plane-pods",
                lambda: client.list(
                    PODS,
                    data_plane_namespace,
                    label_selector=f"{selector},!{component}",
                ),
            )
            s.data_plane_pods = tuple(meshed[0] if meshed else [])
    return s


def invalid_external_workloads(objects: list[dict[str, Any]]) -> tuple[str, ...]:
    """Why each ExternalWorkload that the destination would refuse is refused."""
    problems: list[str] = []
    for obj in objects:
        try:
            parse_external_workload(obj)
        except InvalidExternalWorkloadError as exc:
            problems.append(str(exc))
    return tuple(problems)


async def _count_objects(
    client: Any,
    crd: dict[str, Any],
    get: Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]],
) -> int:
    """How many objects of ``crd`` exist in all namespaces (0 when they cannot be listed)."""
    spec = crd.get("spec") or {}
    versions = [v for v in spec.get("versions") or () if v.get("served")]
    if not versions:
        return 0
    version = next((v for v in versions if v.get("storage")), versions[-1])["name"]
    name = crd["metadata"]["name"]
    path = f"/apis/{spec.get('group')}/{version}/{spec['names']['plural']}"
    listed = await get(name, lambda: client.request("GET", path, params={"limit": "1"}))
    if not listed:
        return 0
    remaining = (listed.get("metadata") or {}).get("remainingItemCount") or 0
    return len(listed.get("items") or ()) + int(remaining)


#: At most this many objects of one kind are read to judge them (one page).
LIST_LIMIT = 500


async def _list_objects(
    client: Any,
    crd: dict[str, Any],
    get: Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]],
) -> list[dict[str, Any]]:
    """Up to :data:`LIST_LIMIT` objects of ``crd`` in all namespaces, read at its storage
    version ([] when they cannot be listed)."""
    spec = crd.get("spec") or {}
    versions = [v for v in spec.get("versions") or () if v.get("served")]
    if not versions:
        return []
    version = next((v for v in versions if v.get("storage")), versions[-1])["name"]
    name = crd["metadata"]["name"]
    path = f"/apis/{spec.get('group')}/{version}/{spec['names']['plural']}"
    listed = await get(name, lambda: client.request("GET", path, params={"limit": str(LIST_LIMIT)}))
    items = (listed or {}).get("items") or []
    return [i for i in items if isinstance(i, dict)]


async def probe_ready(address: str, limit: float = 3.0) -> str | None:
    """GET /ready on a local-mode admin address: None when it answers 200, else why not."""
    try:
        host, port = rules.parse_admin_address(address)
    except ValueError as exc:
        return str(exc)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), limit)
    except TimeoutError:
        return f"no connection to {address} within {limit:g}s"
    except OSError as exc:
        return f"cannot connect to {address}: {exc.strerror or exc}"
    try:
        request = f"GET /ready HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        line = await asyncio.wait_for(reader.readline(), limit)
    except (OSError, TimeoutError) as exc:
        return f"no answer from {address}/ready: {exc or type(exc).__name__}"
    finally:
        writer.close()
    parts = line.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        return f"{address}/ready answered {line[:60]!r}, not HTTP"
    if parts[1] != b"200":
        return f"{address}/ready answered {line.decode(errors='replace').strip()}"
    return None


async def _can(client: Any, verb: str, resource: str, namespace: str) -> bool:
    groups = {
        "clusterroles": "rbac.authorization.k8s.io",
        "clusterrolebindings": "rbac.authorization.k8s.io",
        "customresourcedefinitions": "apiextensions.k8s.io",
        "mutatingwebhookconfigurations": "admissionregistration.k8s.io",
        "deployments": "apps",
        "poddisruptionbudgets": "policy",
    }
    attributes = {"verb": verb, "resource": resource, "group": groups.get(resource, "")}
    if resource in ("serviceaccounts", "services", "deployments", "configmaps", "secrets",
                    "poddisruptionbudgets"):  # fmt: skip
        attributes["namespace"] = namespace
    review = await client.request(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        json={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        },
    )
    return bool((review.get("status") or {}).get("allowed"))


def render_table(results: Sequence[rules.Result]) -> str:
    lines: list[str] = []
    category = None
    for r in results:
        if r.category != category:
            if category is not None:
                lines.append("")
            category = r.category
            lines += [category, "-" * len(category)]
        mark = OK_MARK if r.ok else (WARN_MARK if r.warning else FAIL_MARK)
        lines.append(f"{mark} {r.description}")
        if not r.ok:
            lines.append(f"    {r.message}")
            if r.hint:
                lines.append(f"    see: {r.hint}")
    lines.append("")
    lines.append("Status check results are " + (FAIL_MARK if rules.failed(results) else OK_MARK))
    return "\n".join(lines)


@click.command("check")
@click.option("--pre", is_flag=True, help="Check that the cluster is ready for an install.")
@click.option("--proxy", is_flag=True, help="Also check the data-plane proxies.")
@click.option(
    "-L", "--gossamer-namespace", "namespace", default="gossamer", show_default=True,
    help="Namespace of the control plane.",
)  # fmt: skip
@click.option(
    "-n", "--namespace", "data_plane_namespace", default=None,
    help="With --proxy: the namespace of the data plane to check (default: all).",
)  # fmt: skip
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Kubeconfig file to use.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to read the cluster.")
def check(
    pre: bool,
    proxy: bool,
    namespace: str,
    data_plane_namespace: str | None,
    kubeconfig: str | None,
    output: str,
    timeout: float,
) -> None:
    """Check the control plane (or with --pre the cluster) and say how to fix what fails."""
    if pre and proxy:
        raise click.UsageError("--pre and --proxy cannot be combined")
    fetch = snapshot(
        kubeconfig, namespace, pre=pre, proxy=proxy, data_plane_namespace=data_plane_namespace
    )
    try:
        snap = asyncio.run(asyncio.wait_for(fetch, timeout))
    except TimeoutError:
        snap = rules.Snapshot(namespace=namespace, cli_version=__version__)
        snap.client_error = f"no answer from the cluster within {timeout:g}s"
    results = rules.run(snap, dt.datetime.now(dt.UTC), pre=pre, proxy=proxy)
    for key, error in sorted(snap.errors.items()):
        results.append(
            rules.Result("kubernetes-api", f"can read {key}", False, False, error,
                         "the current user needs read access to the control plane")
        )  # fmt: skip
    if output == "json":
        body = {"success": not rules.failed(results), "results": [asdict(r) for r in results]}
        click.echo(json.dumps(body, indent=2))
    else:
        click.echo(render_table(results))
    if rules.failed(results):
        raise SystemExit(1)


def register(cli: click.Group) -> None:
    cli.add_command(check)
