"""The informer against the real kube-apiserver: list, watch, and relist after a real 410."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from gossamer_kube.client import KubeClient
from gossamer_kube.informer import Informer
from gossamer_kube.resources import CONFIGMAPS, EVENTS
from gossamer_kube.sources import ClientSource
from gossamer_kube.store import EventKind, StoreEvent
from gossamer_kube.testing import KubeTestCluster

WAIT = 30.0


def event(name: str, ns: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "involvedObject": {"kind": "Pod", "name": "x", "namespace": ns},
        "reason": "Test",
        "message": name,
    }


async def wait_for(condition: Any) -> None:
    """Polls ``condition`` (a store read); informers expose no change event to wait on."""
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_informer_lists_then_watches_changes(
    kube_client: KubeClient, kube_namespace: str
) -> None:
    await kube_client.create(
        CONFIGMAPS, {"metadata": {"name": "a"}, "data": {"v": "1"}}, kube_namespace
    )
    informer = Informer(ClientSource(kube_client, CONFIGMAPS, kube_namespace))
    seen: list[StoreEvent] = []
    informer.add_handler(seen.extend)
    informer.start()
    try:
        await asyncio.wait_for(informer.synced.wait(), WAIT)
        assert informer.store.get(kube_namespace, "a") is not None
        await kube_client.patch(CONFIGMAPS, "a", {"data": {"v": "2"}}, kube_namespace)
        await kube_client.create(CONFIGMAPS, {"metadata": {"name": "b"}}, kube_namespace)
        await kube_client.delete(CONFIGMAPS, "a", kube_namespace)
        await wait_for(lambda: informer.store.get(kube_namespace, "a") is None)
        names = [
            (e.kind, e.obj["metadata"]["name"]) for e in seen if e.obj["metadata"]["name"] in "ab"
        ]
        assert (EventKind.MODIFIED, "a") in names
        assert (EventKind.ADDED, "b") in names
        assert names[-1] == (EventKind.DELETED, "a")
        assert informer.store.get(kube_namespace, "b") is not None
    finally:
        await informer.stop()


class DelayedWatch:
    """A real source whose first watch waits until the test has changed and compacted things,
    so that it asks the apiserver for a resourceVersion that no longer exists."""

    def __init__(self, inner: ClientSource) -> None:
        self.inner = inner
        self.name = inner.name
        self.release = asyncio.Event()
        self.watches = 0

    async def list(self) -> tuple[list[dict[str, Any]], str]:
        return await self.inner.list()

    async def watch(self, resource_version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.watches += 1
        if self.watches == 1:
            await self.release.wait()
        async for item in self.inner.watch(resource_version):
            yield item


async def test_informer_relists_after_real_410_and_reports_missed_changes(
    kube_cluster: KubeTestCluster, kube_client: KubeClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    await kube_client.create(EVENTS, event("old", ns), ns)
    await kube_client.create(EVENTS, event("kept", ns), ns)
    source = DelayedWatch(ClientSource(kube_client, EVENTS, ns))
    informer = Informer(source)
    seen: list[StoreEvent] = []
    informer.add_handler(seen.extend)
    informer.start()
    try:
        await asyncio.wait_for(informer.synced.wait(), WAIT)
        # Changes the (not yet open) watch will never see, then compaction past them.
        await kube_client.delete(EVENTS, "old", ns)
        await kube_client.create(EVENTS, event("new", ns), ns)
        await asyncio.to_thread(kube_cluster.compact_etcd)
        source.release.set()
        await wait_for(lambda: informer.stats.relists_gone >= 1)
        await wait_for(lambda: informer.store.get(ns, "new") is not None)
        tail = {(e.kind, e.obj["metadata"]["name"]) for e in seen[2:]}
        assert (EventKind.DELETED, "old") in tail
        assert (EventKind.ADDED, "new") in tail
        assert informer.store.get(ns, "old") is None
        assert informer.store.get(ns, "kept") is not None
        # The informer keeps watching after the relist.
        await kube_client.create(EVENTS, event("later", ns), ns)
        await wait_for(lambda: informer.store.get(ns, "later") is not None)
    finally:
        await informer.stop()
