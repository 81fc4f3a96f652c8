"""The async KubeClient against the real kube-apiserver: verbs, patches, errors, list, watch."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from gossamer_kube.client import KubeClient, Watch
from gossamer_kube.config import KubeConfig
from gossamer_kube.errors import KubeApiError, WatchExpired
from gossamer_kube.resources import CONFIGMAPS, EVENTS, NAMESPACES, PODS
from gossamer_kube.testing import KubeTestCluster
from gossamer_kube.watch import WatchEvent


async def _drain(stream: Watch) -> list[WatchEvent]:
    async with stream:
        return [event async for event in stream]


def _cm(name: str, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"app": "client-test"}}, "data": dict(data)}


async def test_crud_and_every_patch_type(kube_client: KubeClient, kube_namespace: str) -> None:
    created = await kube_client.create(CONFIGMAPS, _cm("a", x="1"), kube_namespace)
    assert created["metadata"]["uid"]
    assert created["kind"] == "ConfigMap"

    merged = await kube_client.patch(CONFIGMAPS, "a", {"data": {"y": "2"}}, kube_namespace)
    assert merged["data"] == {"x": "1", "y": "2"}
    json_patched = await kube_client.patch(
        CONFIGMAPS,
        "a",
        [{"op": "replace", "path": "/data/x", "value": "10"}],
        kube_namespace,
        patch_type="json",
    )
    assert json_patched["data"] == {"x": "10", "y": "2"}

    pod = {
        "metadata": {"name": "p"},
        "spec": {
            "nodeName": "nowhere",  # never scheduled or run: only the spec matters here
            "containers": [
                {"name": "a", "image": "registry.invalid/a:1"},
                {"name": "b", "image": "registry.invalid/b:1"},
            ],
        },
    }
    await kube_client.create(PODS, pod, kube_namespace)
    strategic = await kube_client.patch(
        PODS,
        "p",
        {"spec": {"containers": [{"name": "b", "image": "registry.invalid/b:2"}]}},
        kube_namespace,
        patch_type="strategic",
    )
    # A strategic merge patch merges the container list by name; a merge patch would replace it.
    assert [(c["name"], c["image"]) for c in strategic["spec"]["containers"]] == [
        ("a", "registry.invalid/a:1"),
        ("b", "registry.invalid/b:2"),
    ]

    fetched = await kube_client.get(CONFIGMAPS, "a", kube_namespace)
    assert fetched["data"] == {"x": "10", "y": "2"}
    await kube_client.delete(CONFIGMAPS, "a", kube_namespace)
    with pytest.raises(KubeApiError) as info:
        await kube_client.get(CONFIGMAPS, "a", kube_namespace)
    assert info.value.not_found
    assert info.value.reason == "NotFound"


async def test_conflict_and_invalid_are_parsed(
    kube_client: KubeClient, kube_namespace: str
) -> None:
    await kube_client.create(CONFIGMAPS, _cm("dup"), kube_namespace)
    with pytest.raises(KubeApiError) as info:
        await kube_client.create(CONFIGMAPS, _cm("dup"), kube_namespace)
    assert (info.value.status, info.value.reason) == (409, "AlreadyExists")
    assert "dup" in info.value.message
    with pytest.raises(KubeApiError) as info:
        await kube_client.create(CONFIGMAPS, _cm("Not_A_Valid_Name"), kube_namespace)
    assert (info.value.status, info.value.reason) == (422, "Invalid")


async def test_list_pages_and_label_selector(
    kube_cluster: KubeTestCluster, kube_namespace: str
) -> None:
    config = KubeConfig.from_kubeconfig(kube_cluster.kubeconfig)
    async with KubeClient(config, page_size=2) as client:
        for i in range(5):
            await client.create(CONFIGMAPS, _cm(f"cm-{i}"), kube_namespace)
        items, rv = await client.list(CONFIGMAPS, kube_namespace, label_selector="app=client-test")
        assert sorted(i["metadata"]["name"] for i in items) == [f"cm-{i}" for i in range(5)]
        assert all(i["kind"] == "ConfigMap" for i in items)
        assert int(rv) > 0
        none, _ = await client.list(CONFIGMAPS, kube_namespace, label_selector="app=other")
        assert none == []


async def test_watch_from_list_resource_version(
    kube_client: KubeClient, kube_namespace: str
) -> None:
    _, rv = await kube_client.list(CONFIGMAPS, kube_namespace)

    async def collect() -> list[WatchEvent]:
        seen: list[WatchEvent] = []
        async with kube_client.watch(
            CONFIGMAPS, kube_namespace, resource_version=rv, timeout_seconds=30
        ) as stream:
            async for event in stream:
                if event.type == "BOOKMARK":
                    continue
                seen.append(event)
                if event.type == "DELETED":
                    return seen
        return seen

    task = asyncio.create_task(collect())
    await kube_client.create(CONFIGMAPS, _cm("w"), kube_namespace)
    await kube_client.patch(CONFIGMAPS, "w", {"data": {"k": "v"}}, kube_namespace)
    await kube_client.delete(CONFIGMAPS, "w", kube_namespace)
    events = await asyncio.wait_for(task, 30)
    assert [e.type for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    rvs = [int(e.resource_version) for e in events]
    assert rvs == sorted(rvs)
    assert rvs[0] > int(rv)
    assert events[1].object["data"] == {"k": "v"}


async def test_watch_ends_at_server_timeout(kube_client: KubeClient, kube_namespace: str) -> None:
    _, rv = await kube_client.list(CONFIGMAPS, kube_namespace)
    events = [
        e
        async for e in kube_client.watch(
            CONFIGMAPS, kube_namespace, resource_version=rv, timeout_seconds=1
        )
    ]
    assert [e for e in events if e.type != "BOOKMARK"] == []


async def test_watch_from_compacted_version_is_watch_expired(
    kube_cluster: KubeTestCluster, kube_client: KubeClient, kube_namespace: str
) -> None:
    event = {
        "metadata": {"name": "e1"},
        "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": kube_namespace},
        "reason": "Test",
        "message": "before compaction",
    }
    first = await kube_client.create(EVENTS, event, kube_namespace)
    old_rv = first["metadata"]["resourceVersion"]
    # Two later writes: compaction keeps its own revision, and the watch from e1 starts at
    # e1 + 1, which must be strictly older than the compacted revision.
    for name in ("e2", "e3"):
        await kube_client.create(EVENTS, {**event, "metadata": {"name": name}}, kube_namespace)
    assert kube_cluster.compact_etcd() > int(old_rv) + 1
    stale = kube_client.watch(EVENTS, kube_namespace, resource_version=old_rv, timeout_seconds=10)
    with pytest.raises(WatchExpired) as info:
        await _drain(stale)
    assert info.value.status == 410
    assert info.value.reason in ("Expired", "Gone")
    # The relist that WatchExpired calls for works, and a watch from its version is accepted.
    items, rv = await kube_client.list(EVENTS, kube_namespace)
    assert sorted(i["metadata"]["name"] for i in items) == ["e1", "e2", "e3"]
    async with kube_client.watch(
        EVENTS, kube_namespace, resource_version=rv, timeout_seconds=1
    ) as stream:
        assert [e async for e in stream if e.type != "BOOKMARK"] == []


async def test_token_review_of_garbage(kube_client: KubeClient) -> None:
    result = await kube_client.token_review("not-a-token", ["identity.l5d.io"])
    assert not result.authenticated


async def test_untrusted_credentials_are_401(kube_cluster: KubeTestCluster) -> None:
    config = KubeConfig.from_kubeconfig(kube_cluster.kubeconfig)
    anonymous = dataclasses.replace(
        config, client_cert_data=None, client_key_data=None, token="bogus"
    )
    async with KubeClient(anonymous) as client:
        with pytest.raises(KubeApiError) as info:
            await client.list(NAMESPACES)
    assert (info.value.status, info.value.reason) == (401, "Unauthorized")
