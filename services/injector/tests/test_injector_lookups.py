from __future__ import annotations

import asyncio
from typing import Any

from gossamer_inject import Owner
from gossamer_injector.lookups import Lookuper
from gossamer_injector.review import Lookups
from gossamer_kube.errors import KubeApiError, KubeConnectionError
from gossamer_kube.resources import ResourceRef


class FakeKube:
    def __init__(self, objects: dict[tuple[str, str], Any]) -> None:
        self.objects = objects
        self.calls: list[tuple[str, str]] = []

    async def get(
        self, ref: ResourceRef, name: str, namespace: str | None = None
    ) -> dict[str, Any]:
        self.calls.append((ref.plural, name))
        found = self.objects.get((ref.plural, name))
        if isinstance(found, Exception):
            raise found
        if found is None:
            raise KubeApiError(404, "NotFound", "nope")
        return found  # type: ignore[no-any-return]


async def test_namespace_cache_expires() -> None:
    now = [0.0]
    kube = FakeKube(
        {("namespaces", "shop"): {"metadata": {"annotations": {"linkerd.io/inject": "enabled"}}}}
    )
    lookups = Lookuper(kube, namespace_ttl=5, namespace_stale=10, clock=lambda: now[0])
    assert (await lookups.namespace_annotations("shop")) == {"linkerd.io/inject": "enabled"}
    await lookups.namespace_annotations("shop")
    assert len(kube.calls) == 1
    # Past the TTL but inside the stale window: old answer now, refresh in the background.
    kube.objects[("namespaces", "shop")] = {"metadata": {"annotations": {}}}
    now[0] = 6
    assert (await lookups.namespace_annotations("shop")) == {"linkerd.io/inject": "enabled"}
    for _ in range(3):
        await asyncio.sleep(0)  # let the background refresh run
    assert len(kube.calls) == 2
    now[0] = 7
    assert (await lookups.namespace_annotations("shop")) == {}
    assert len(kube.calls) == 2
    # Past the stale window: the review waits for a fresh read.
    now[0] = 100
    assert (await lookups.namespace_annotations("shop")) == {}
    assert len(kube.calls) == 3
    await lookups.close()


async def test_owner_resolution() -> None:
    rs = {
        "metadata": {"ownerReferences": [{"kind": "Deployment", "name": "web", "controller": True}]}
    }
    kube = FakeKube({("replicasets", "web-1"): rs, ("jobs", "j"): KubeConnectionError("down")})
    lookups = Lookuper(kube)
    assert await lookups.owner(("ReplicaSet", "web-1"), "shop") == Owner("Deployment", "web")
    assert await lookups.owner(("ReplicaSet", "gone"), "shop") == Owner("ReplicaSet", "gone")
    assert await lookups.owner(("Job", "j"), "shop") == Owner("Job", "j")
    assert await lookups.owner(("StatefulSet", "db"), "shop") == Owner("StatefulSet", "db")


async def test_namespace_failure_becomes_warning() -> None:
    kube = FakeKube({("namespaces", "shop"): KubeConnectionError("refused")})
    ctx = await Lookuper(kube).resolve(Lookups("shop", None))
    assert ctx.namespace_annotations == {}
    assert "could not read namespace shop" in ctx.warnings[0]
