"""Writes route ``status.parents`` through the status subresource when it changes.

Any change to routes, Services, Servers or EgressNetworks marks the writer dirty; one task
then recomputes every route's status (:mod:`gossamer_destination.route_status`) and patches
only the routes whose status differs. Each patch carries the route's ``resourceVersion``,
so a write based on a stale copy fails with a conflict instead of overwriting; the watch
event of the newer copy marks the writer dirty again. Our own status writes come back as
watch events too, and compute to "no change", so writing never loops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from gossamer_kube.store import StoreEvent

from gossamer_destination.cluster import ROUTE_KINDS, Cluster
from gossamer_destination.endpoints import meta
from gossamer_destination.route_status import StatusLookups, desired_parents, status_update
from gossamer_destination.settings import DestinationSettings

log = structlog.get_logger(__name__)

#: ``patch(kind, namespace, name, merge_patch)`` against the route's status subresource.
PatchStatus = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]
#: The kinds whose changes can change a route's status.
WATCHED_KINDS = (*ROUTE_KINDS, "services", "servers", "egressnetworks")


def rfc3339_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RouteStatusWriter:
    def __init__(
        self,
        cluster: Cluster,
        settings: DestinationSettings,
        patch: PatchStatus,
        *,
        clock: Callable[[], str] = rfc3339_now,
        retry_delay: float = 5.0,
        on_result: Callable[[str], None] = lambda result: None,
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self._patch = patch
        self._clock = clock
        self._retry_delay = retry_delay
        self._on_result = on_result
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.lookups = StatusLookups(
            service=lambda ns, name: cluster.get("services", ns, name),
            server=lambda ns, name: cluster.get("servers", ns, name),
            egress_network=lambda ns, name: cluster.get("egressnetworks", ns, name),
        )
        for kind in WATCHED_KINDS:
            cluster.informers[kind].add_handler(self._changed)

    def _changed(self, events: list[StoreEvent]) -> None:
        self._dirty.set()

    def start(self) -> None:
        if self._task is None:
            self._dirty.set()
            self._task = asyncio.create_task(self._run(), name="route-status-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                failed = await self.sync_once()
            except Exception:
                log.exception("destination.route_status_failed")
                failed = True
            if failed:
                await asyncio.sleep(self._retry_delay)
                self._dirty.set()

    async def sync_once(self) -> bool:
        """Patch every route whose status differs; True if a write failed (retry later)."""
        failed = False
        for kind in ROUTE_KINDS:
            for route in self.cluster.objects(kind):
                desired = desired_parents(route, self.lookups, self.settings)
                parents = status_update(route, desired, self._clock())
                if parents is None:
                    continue
                m = meta(route)
                ns, name = str(m.get("namespace")), str(m.get("name"))
                body = {
                    "metadata": {"resourceVersion": m.get("resourceVersion")},
                    "status": {"parents": parents},
                }
                try:
                    await self._patch(kind, ns, name, body)
                except Exception as exc:
                    status = getattr(exc, "status", None)
                    if status in (404, 409):
                        # Deleted, or changed since we read it: the watch brings the news.
                        self._on_result("conflict")
                        continue
                    failed = True
                    self._on_result("error")
                    log.warning(
                        "destination.route_status_write_failed",
                        kind=kind,
                        route=f"{ns}/{name}",
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    continue
                self._on_result("written")
                log.info("destination.route_status_written", kind=kind, route=f"{ns}/{name}")
        return failed
