"""The informer loop against a scripted list/watch source (no apiserver)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from gossamer_kube.backoff import Backoff
from gossamer_kube.informer import GoneError, Informer
from gossamer_kube.store import EventKind, StoreEvent


def pod(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


class ScriptedSource:
    """Each list/watch call pops the next scripted answer; exceptions are raised."""

    name = "pods"

    def __init__(self, lists: list[Any], watches: list[Any]) -> None:
        self.lists = lists
        self.watches = watches
        self.watch_from: list[str] = []
        self.done = asyncio.Event()

    async def list(self) -> tuple[list[dict[str, Any]], str]:
        answer = self.lists.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        items, rv = answer
        return items, rv

    async def watch(self, resource_version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.watch_from.append(resource_version)
        if not self.watches:
            self.done.set()
            await asyncio.Event().wait()
        script = self.watches.pop(0)
        if isinstance(script, BaseException):
            raise script
        for item in script:
            if isinstance(item, BaseException):
                raise item
            yield item


async def run_until_done(source: ScriptedSource) -> tuple[Informer, list[StoreEvent]]:
    seen: list[StoreEvent] = []
    informer = Informer(source, backoff=Backoff(base=0.001, cap=0.002))
    informer.add_handler(seen.extend)
    informer.start()
    await asyncio.wait_for(source.done.wait(), 5)
    await informer.stop()
    return informer, seen


async def test_list_then_watch_from_the_list_version_and_bookmarks_advance() -> None:
    source = ScriptedSource(
        lists=[([pod("a", "5")], "10")],
        watches=[
            [
                ("ADDED", pod("b", "11")),
                ("BOOKMARK", {"metadata": {"resourceVersion": "15"}}),
            ],
            [("MODIFIED", pod("a", "16")), ("DELETED", pod("b", "17"))],
        ],
    )
    informer, seen = await run_until_done(source)
    assert source.watch_from == ["10", "15", "17"]
    assert [(e.kind, e.obj["metadata"]["name"]) for e in seen] == [
        (EventKind.ADDED, "a"),
        (EventKind.ADDED, "b"),
        (EventKind.MODIFIED, "a"),
        (EventKind.DELETED, "b"),
    ]
    assert informer.synced.is_set()
    assert informer.stats.bookmarks == 1


async def test_gone_event_relists_and_handlers_get_the_missed_changes() -> None:
    source = ScriptedSource(
        lists=[
            ([pod("a", "1"), pod("b", "1")], "10"),
            ([pod("a", "30"), pod("c", "31")], "40"),
        ],
        watches=[[("ERROR", {"kind": "Status", "code": 410, "message": "too old"})]],
    )
    informer, seen = await run_until_done(source)
    assert source.watch_from == ["10", "40"]
    tail = {(e.kind, e.obj["metadata"]["name"]) for e in seen[2:]}
    assert tail == {
        (EventKind.DELETED, "b"),
        (EventKind.MODIFIED, "a"),
        (EventKind.ADDED, "c"),
    }
    assert informer.stats.relists_gone == 1


class Api410Error(Exception):
    status = 410


async def test_gone_exception_relists_without_backoff() -> None:
    source = ScriptedSource(
        lists=[([], "1"), ([pod("x", "9")], "9")],
        watches=[Api410Error("expired")],
    )
    informer, seen = await run_until_done(source)
    assert [e.obj["metadata"]["name"] for e in seen] == ["x"]
    assert informer.stats.errors == 0


async def test_connection_errors_back_off_and_resume_from_the_last_version() -> None:
    source = ScriptedSource(
        lists=[ConnectionRefusedError("apiserver down"), ([pod("a", "1")], "3")],
        watches=[
            [("ADDED", pod("b", "4")), ConnectionResetError("apiserver restarted")],
            ConnectionRefusedError("still down"),
            [("ADDED", pod("c", "5"))],
        ],
    )
    informer, seen = await run_until_done(source)
    assert source.watch_from == ["3", "4", "4", "5"]
    assert [e.obj["metadata"]["name"] for e in seen] == ["a", "b", "c"]
    assert informer.stats.errors == 3


async def test_non_gone_error_event_is_retried() -> None:
    source = ScriptedSource(
        lists=[([], "1")],
        watches=[[("ERROR", {"code": 500, "message": "internal"})], [("ADDED", pod("a", "2"))]],
    )
    informer, seen = await run_until_done(source)
    assert [e.obj["metadata"]["name"] for e in seen] == ["a"]
    assert informer.stats.errors == 1


async def test_a_failing_handler_does_not_stop_the_informer() -> None:
    source = ScriptedSource(lists=[([pod("a", "1")], "1")], watches=[[("ADDED", pod("b", "2"))]])
    informer = Informer(source)
    seen: list[str] = []

    def broken(events: list[StoreEvent]) -> None:
        raise RuntimeError("bug")

    informer.add_handler(broken)
    informer.add_handler(lambda evs: seen.extend(e.obj["metadata"]["name"] for e in evs))
    informer.start()
    await asyncio.wait_for(source.done.wait(), 5)
    await informer.stop()
    assert seen == ["a", "b"]


def test_backoff_grows_caps_and_resets() -> None:
    b = Backoff(base=1.0, cap=4.0, jitter=0.5, rand=lambda: 0.0)
    assert [b.next_delay() for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    b.reset()
    assert b.next_delay() == 1.0
    jittered = Backoff(base=1.0, cap=4.0, jitter=0.5, rand=lambda: 1.0)
    assert jittered.next_delay() == 0.5


@pytest.mark.parametrize("exc", [GoneError("x"), Api410Error("y")])
def test_is_gone(exc: Exception) -> None:
    from gossamer_kube.informer import is_gone

    assert is_gone(exc)
    assert not is_gone(ValueError())
