"""Binds a :class:`~gossamer_kube.client.KubeClient` and a resource kind into an informer source."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog

from gossamer_kube.client import KubeClient
from gossamer_kube.informer import GoneError, ListWatchSource
from gossamer_kube.resources import ResourceRef
from gossamer_kube.store import KubeObject

log = structlog.get_logger(__name__)

#: Like client-go, each watch asks the server to end it after 5-10 minutes, so that a
#: silently broken connection is noticed and load spreads over apiserver restarts.
MIN_WATCH_TIMEOUT = 300


class ClientSource:
    """List and watch one kind, cluster-wide or in one namespace."""

    def __init__(
        self,
        client: KubeClient,
        ref: ResourceRef,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        watch_timeout: int | None = None,
    ) -> None:
        self.client = client
        self.ref = ref
        self.namespace = namespace
        self.label_selector = label_selector
        self.name = ref.plural
        self._watch_timeout = watch_timeout

    async def list(self) -> tuple[list[KubeObject], str]:
        return await self.client.list(self.ref, self.namespace, label_selector=self.label_selector)

    async def watch(self, resource_version: str) -> AsyncIterator[tuple[str, KubeObject]]:
        timeout = self._watch_timeout or int(MIN_WATCH_TIMEOUT * (1 + random.random()))  # noqa: S311
        async with self.client.watch(
            self.ref,
            self.namespace,
            resource_version=resource_version,
            allow_bookmarks=True,
            timeout_seconds=timeout,
            label_selector=self.label_selector,
        ) as events:
            async for event in events:
                yield event.type, event.object


def _is_not_found(exc: BaseException) -> bool:
    return getattr(exc, "status", None) == 404


class OptionalSource:
    """A source whose resource may not be served: a CRD that is not (yet) installed.

    A ``404`` from the list answers an empty list, so the informer still syncs (with an empty
    store) and :attr:`absent` says why. While absent, :meth:`watch` waits ``recheck`` seconds
    and then raises :class:`~gossamer_kube.informer.GoneError`, so the informer relists and
    picks the resource up once its CRD is installed. A ``404`` from an open watch (the CRD was
    deleted) relists the same way, which empties the store.
    """

    def __init__(
        self,
        inner: ListWatchSource,
        *,
        recheck: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if recheck <= 0:
            raise ValueError("recheck must be positive")
        self.inner = inner
        self.name = inner.name
        self.recheck = recheck
        self.absent = False
        self._sleep = sleep

    async def list(self) -> tuple[list[KubeObject], str]:
        try:
            items, rv = await self.inner.list()
        except Exception as exc:
            if not _is_not_found(exc):
                raise
            if not self.absent:
                log.info("informer.resource_absent", kind=self.name, recheck=self.recheck)
            self.absent = True
            return [], ""
        if self.absent:
            log.info("informer.resource_present", kind=self.name)
        self.absent = False
        return items, rv

    async def watch(self, resource_version: str) -> AsyncIterator[tuple[str, KubeObject]]:
        if self.absent:
            await self._sleep(self.recheck)
            raise GoneError(f"{self.name} is not served; listing again")
        try:
            async for item in self.inner.watch(resource_version):
                yield item
        except Exception as exc:
            if _is_not_found(exc):
                raise GoneError(f"{self.name} is no longer served") from exc
            raise
