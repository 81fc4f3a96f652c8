"""Binds a :class:`~gossamer_kube.client.KubeClient` and a resource kind into an informer source."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

from gossamer_kube.client import KubeClient
from gossamer_kube.resources import ResourceRef
from gossamer_kube.store import KubeObject

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
