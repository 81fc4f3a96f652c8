"""The apiserver reads a review needs: namespace annotations and a pod's owning workload.

Namespace annotations are cached briefly: a rollout of many pods in one namespace costs one
GET instead of one per pod. Once an entry is older than the TTL, the next review still gets
it (if it is younger than ``ttl + stale``) while a background GET refreshes it, so no review
waits on the apiserver for a namespace it has seen recently. Failures never block
admission; they come back as warnings.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog
from gossamer_inject import Owner
from gossamer_kube.errors import KubeApiError, KubeError
from gossamer_kube.resources import JOBS, NAMESPACES, REPLICASETS, ResourceRef

from gossamer_injector.review import Context, Lookups, controller_ref

_log = structlog.get_logger("gossamer.injector.lookups")


class Getter(Protocol):
    """The one client method lookups use (``gossamer_kube.client.KubeClient.get``)."""

    async def get(
        self, ref: ResourceRef, name: str, namespace: str | None = None
    ) -> dict[str, Any]: ...


_OWNER_REFS = {"ReplicaSet": REPLICASETS, "Job": JOBS}


class Lookuper:
    def __init__(
        self,
        client: Getter,
        *,
        namespace_ttl: float = 5.0,
        namespace_stale: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = namespace_ttl
        self._stale = namespace_stale
        self._clock = clock
        self._namespaces: dict[str, tuple[float, Mapping[str, str]]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    async def close(self) -> None:
        """Cancel background refreshes (at shutdown)."""
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def resolve(self, lookups: Lookups) -> Context:
        warnings: list[str] = []
        annotations: Mapping[str, str] = {}
        if lookups.namespace is not None:
            try:
                annotations = await self.namespace_annotations(lookups.namespace)
            except KubeError as exc:
                _log.warning("namespace_lookup_failed", namespace=lookups.namespace, error=str(exc))
                warnings.append(
                    f"gossamer: could not read namespace {lookups.namespace}; "
                    f"its linkerd.io/inject setting was not applied: {exc}"
                )
        owner = None
        if lookups.owner is not None and lookups.namespace is not None:
            owner = await self.owner(lookups.owner, lookups.namespace)
        return Context(annotations, owner, tuple(warnings))

    async def namespace_annotations(self, name: str) -> Mapping[str, str]:
        now = self._clock()
        cached = self._namespaces.get(name)
        if cached is not None:
            age = now - cached[0]
            if age < self._ttl:
                return cached[1]
            if age < self._ttl + self._stale:
                if name not in self._refreshing:
                    self._refreshing[name] = asyncio.create_task(self._refresh(name))
                return cached[1]
        return await self._fetch(name)

    async def _refresh(self, name: str) -> None:
        try:
            await self._fetch(name)
        except KubeError as exc:
            _log.warning("namespace_refresh_failed", namespace=name, error=str(exc))
        finally:
            self._refreshing.pop(name, None)

    async def _fetch(self, name: str) -> Mapping[str, str]:
        now = self._clock()
        ns = await self._client.get(NAMESPACES, name)
        raw = (ns.get("metadata") or {}).get("annotations") or {}
        annotations = {str(k): str(v) for k, v in raw.items()}
        self._namespaces[name] = (now, annotations)
        if len(self._namespaces) > 4096:
            oldest = min(self._namespaces, key=lambda k: self._namespaces[k][0])
            del self._namespaces[oldest]
        return annotations

    async def owner(self, ref: tuple[str, str], namespace: str) -> Owner:
        """ReplicaSet → its Deployment, Job → its CronJob; else the direct owner."""
        kind, name = ref
        resource = _OWNER_REFS.get(kind)
        if resource is None:
            return Owner(kind, name)
        try:
            obj = await self._client.get(resource, name, namespace)
        except KubeApiError as exc:
            if exc.status != 404:
                _log.warning("owner_lookup_failed", kind=kind, name=name, error=str(exc))
            return Owner(kind, name)
        except KubeError as exc:
            _log.warning("owner_lookup_failed", kind=kind, name=name, error=str(exc))
            return Owner(kind, name)
        parent = controller_ref(obj)
        if parent is not None and parent[0] in ("Deployment", "CronJob"):
            return Owner(*parent)
        return Owner(kind, name)
