"""OptionalSource: an informer over a CRD that may be absent syncs empty and recovers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from gossamer_kube.backoff import Backoff
from gossamer_kube.errors import KubeApiError
from gossamer_kube.informer import GoneError, Informer
from gossamer_kube.sources import OptionalSource


def route(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


def not_found() -> KubeApiError:
    return KubeApiError(404, "NotFound", "the server could not find the requested resource")


class Inner:
    name = "grpcroutes"

    def __init__(self, lists: list[Any], watches: list[Any]) -> None:
        self.lists = lists
        self.watches = watches
        self.idle = asyncio.Event()

    async def list(self) -> tuple[list[dict[str, Any]], str]:
        answer = self.lists.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer  # type: ignore[no-any-return]

    async def watch(self, resource_version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        if not self.watches:
            self.idle.set()
            await asyncio.Event().wait()
        script = self.watches.pop(0)
        if isinstance(script, BaseException):
            raise script
        for item in script:
            yield item


class ManualSleep:
    """An injected sleep that returns only when the test says so."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.release = asyncio.Event()
        self.called = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.calls.append(delay)
        self.called.set()
        await self.release.wait()
        self.release.clear()


async def test_absent_resource_syncs_empty_and_is_picked_up_later() -> None:
    inner = Inner([not_found(), ([route("a", "5")], "5")], [])
    sleep = ManualSleep()
    source = OptionalSource(inner, recheck=7.0, sleep=sleep)
    informer = Informer(source, backoff=Backoff(base=0.001, cap=0.002))
    informer.start()
    try:
        await asyncio.wait_for(informer.synced.wait(), 5)
        assert source.absent
        assert informer.store.objects() == []
        await asyncio.wait_for(sleep.called.wait(), 5)
        assert sleep.calls == [7.0]
        sleep.release.set()
        await asyncio.wait_for(inner.idle.wait(), 5)
        assert not source.absent
        assert [o["metadata"]["name"] for o in informer.store.objects()] == ["a"]
        assert informer.stats.errors == 0
    finally:
        await informer.stop()


async def test_crd_deleted_while_watching_empties_the_store() -> None:
    inner = Inner([([route("a", "5")], "5"), not_found()], [not_found()])
    sleep = ManualSleep()
    source = OptionalSource(inner, recheck=1.0, sleep=sleep)
    informer = Informer(source, backoff=Backoff(base=0.001, cap=0.002))
    informer.start()
    try:
        await asyncio.wait_for(sleep.called.wait(), 5)
        assert source.absent
        assert informer.store.objects() == []
        assert informer.stats.relists_gone == 1
    finally:
        await informer.stop()


async def test_other_errors_are_not_hidden() -> None:
    inner = Inner([KubeApiError(403, "Forbidden", "no")], [])
    source = OptionalSource(inner, sleep=ManualSleep())
    with pytest.raises(KubeApiError):
        await source.list()
    assert not source.absent


async def test_watch_while_absent_asks_for_a_relist() -> None:
    sleep = ManualSleep()
    source = OptionalSource(Inner([not_found()], []), recheck=3.0, sleep=sleep)
    await source.list()
    sleep.release.set()
    with pytest.raises(GoneError):
        async for _ in source.watch(""):
            pass
