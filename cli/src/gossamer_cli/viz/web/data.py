"""What each dashboard page shows, read from Prometheus and Kubernetes.

The PromQL is :mod:`gossamer_cli.viz.stat`'s and :mod:`gossamer_cli.viz.edges`'s, so a page
shows the figures ``gossamer viz stat`` and ``gossamer viz edges`` print. Kubernetes supplies
the resources that exist (shown even without traffic) and the meshed-pod counts; without
access to it the figures are still shown, with ``-`` for MESHED and a notice.

Names arrive validated (:mod:`.guard`); the PromQL builders quote every label value anyway.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gossamer_cli.viz import edges as edges_mod
from gossamer_cli.viz import stat as stat_mod
from gossamer_cli.viz.kubeobjects import KubeView
from gossamer_cli.viz.meshed import meshed_counts, owner
from gossamer_cli.viz.promapi import PrometheusClient, PrometheusError, Sample
from gossamer_cli.viz.resources import KINDS, Resource
from gossamer_cli.viz.tap_render import pods_by_address
from gossamer_cli.viz.tap_requests import TapRequest, TapRequests

#: (kinds, namespace or None) -> what Kubernetes lists.
KubeReader = Callable[[Sequence[str], "str | None"], Awaitable[KubeView]]
WORKLOAD_KINDS = ("deployment", "pod")
#: One tap page: this long a tap, at most this many events and requests a second.
TAP_SECONDS = 3.0
TAP_EVENTS = 1500
TAP_MAX_RPS = 100.0
_KIND = {k.name: k for k in KINDS}


class DataError(Exception):
    """Prometheus could not answer; the page says so instead of showing stale figures."""


@dataclass
class Table:
    rows: list[stat_mod.StatRow]
    #: Why MESHED is unknown ("" when Kubernetes answered).
    kube_error: str = ""


@dataclass
class Detail:
    namespace: str
    kind: str
    name: str
    row: stat_mod.StatRow
    #: The deployment's pods (empty for a pod).
    pods: list[stat_mod.StatRow] = field(default_factory=list)
    #: Workloads of the same kind that call it, with the figures of those calls.
    inbound: list[stat_mod.StatRow] = field(default_factory=list)
    #: What it calls, with the figures of those calls.
    outbound: list[stat_mod.StatRow] = field(default_factory=list)
    kube_error: str = ""
    exists: bool = True


@dataclass
class TapView:
    namespace: str
    kind: str
    name: str
    seconds: float
    requests: list[TapRequest] = field(default_factory=list)
    #: Why there is no tap (no service, refused, unreachable); "" when it ran.
    error: str = ""
    proxy_errors: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class TapAccess:
    """The tap service and the dashboard's own credentials for it (its kubeconfig's)."""

    endpoint: Any
    kube_config: Any


class DashboardData:
    def __init__(
        self,
        prometheus: PrometheusClient,
        kube: KubeReader | None,
        *,
        window: str = "1m",
        tap: TapAccess | None = None,
    ) -> None:
        stat_mod.window_seconds(window)  # refuses a bad window now, not on every page
        self.prometheus = prometheus
        self.kube = kube
        self.window = window
        self.tap_access = tap

    # -- Prometheus ------------------------------------------------------------------------

    async def _query(self, promql: str) -> list[Sample]:
        try:
            return await asyncio.to_thread(self.prometheus.query, promql)
        except PrometheusError as exc:
            raise DataError(str(exc)) from exc

    async def _answers(self, scope: stat_mod.Scope) -> dict[str, list[Sample]]:
        queries = stat_mod.stat_queries(scope, self.window)
        results = await asyncio.gather(*(self._query(q) for q in queries.values()))
        return dict(zip(queries, results, strict=True))

    async def _kube(self, kinds: Sequence[str], namespace: str | None) -> tuple[KubeView, str]:
        if self.kube is None:
            return KubeView(), "no Kubernetes access configured"
        try:
            return await self.kube(kinds, namespace), ""
        except Exception as exc:  # figures without MESHED beat no page
            return KubeView(), f"cannot read Kubernetes: {exc}"

    async def _rows(
        self,
        scope: stat_mod.Scope,
        kind: str,
        view: KubeView | None = None,
        *,
        known: Sequence[tuple[str, str]] = (),
    ) -> list[stat_mod.StatRow]:
        answers = await self._answers(scope)
        meshed = meshed_counts(kind, view.pods, view.services) if view is not None else {}
        return stat_mod.stat_rows(scope, kind, answers, self.window, known=known, meshed=meshed)

    # -- pages -----------------------------------------------------------------------------

    async def namespaces(self) -> Table:
        scope = stat_mod.stat_scope(Resource(_KIND["namespace"], ""), None)
        view, error = await self._kube(["namespace"], None)
        rows = await self._rows(scope, "namespace", view, known=view.known.get("namespace", []))
        return Table(rows, error)

    async def workloads(self, namespace: str, kind: str) -> Table:
        """Every ``kind`` (deployment or pod) of ``namespace`` with its golden metrics."""
        if kind not in WORKLOAD_KINDS:
            raise ValueError(f"not a workload kind: {kind}")
        scope = stat_mod.stat_scope(Resource(_KIND[kind], ""), namespace)
        view, error = await self._kube([kind], namespace)
        rows = await self._rows(scope, kind, view, known=view.known.get(kind, []))
        return Table(rows, error)

    async def detail(self, namespace: str, kind: str, name: str) -> Detail:
        if kind not in WORKLOAD_KINDS:
            raise ValueError(f"not a workload kind: {kind}")
        target = Resource(_KIND[kind], name)
        every = Resource(_KIND[kind], "")
        view, error = await self._kube([kind, "pod"], namespace)
        own = stat_mod.stat_scope(target, namespace)
        callers = stat_mod.stat_scope(every, None, to_resource=target, to_namespace=namespace)
        callees = stat_mod.stat_scope(every, None, from_resource=target, from_namespace=namespace)
        tables = [
            self._rows(own, kind, view, known=[(namespace, name)]),
            # MESHED of callers and callees is known for those in the same namespace.
            self._rows(callers, kind, view),
            self._rows(callees, kind, view),
        ]
        if kind == "deployment":
            pods = stat_mod.stat_scope(Resource(_KIND["pod"], ""), namespace)
            pods = dataclasses.replace(pods, selector={**pods.selector, "deployment": name})
            owned = [
                (namespace, pod["metadata"]["name"])
                for pod in view.pods
                if owner(pod, "deployment") == name
                and pod["metadata"].get("namespace") == namespace
            ]
            tables.append(self._rows(pods, "pod", view, known=owned))
        results = await asyncio.gather(*tables)
        row = next(
            (r for r in results[0] if r.name == name), stat_mod.StatRow(namespace, kind, name)
        )
        exists = error != "" or (namespace, name) in view.known.get(kind, [])
        return Detail(
            namespace,
            kind,
            name,
            row,
            pods=results[3] if kind == "deployment" else [],
            inbound=results[1],
            outbound=results[2],
            kube_error=error,
            exists=exists or row.has_traffic,
        )

    async def edges(self, namespace: str) -> list[edges_mod.Edge]:
        queries = edges_mod.edges_queries("deployment", namespace)
        results = await asyncio.gather(*(self._query(q) for q in queries.values()))
        return edges_mod.build_edges("deployment", dict(zip(queries, results, strict=True)))

    async def tap(self, namespace: str, kind: str, name: str) -> TapView:
        """One bounded tap of ``kind/name`` through the tap service."""
        from gossamer_cli.viz.tap_service.api import TapQuery
        from gossamer_cli.viz.tap_service.client import TapServiceCall, TapServiceError

        if kind not in WORKLOAD_KINDS:
            raise ValueError(f"not a workload kind: {kind}")
        view = TapView(namespace, kind, name, TAP_SECONDS)
        if self.tap_access is None:
            view.error = "no tap service configured (the dashboard's --tap-url)"
            return view
        pods, _ = await self._kube(["pod"], None)
        table = TapRequests(pods=pods_by_address(pods.pods))
        query = TapQuery(seconds=TAP_SECONDS, max_events=TAP_EVENTS, max_rps=TAP_MAX_RPS)
        call = TapServiceCall(
            self.tap_access.endpoint,
            self.tap_access.kube_config,
            namespace,
            Resource(_KIND[kind], name),
            query,
        )
        try:
            async for source, event in call.events():
                table.add(source, event)
        except TapServiceError as exc:
            view.error = str(exc)
        except OSError as exc:
            view.error = f"cannot reach the tap service: {exc}"
        view.requests = table.latest()
        view.proxy_errors = call.errors
        return view
