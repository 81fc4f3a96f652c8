"""List-then-watch cache for one resource kind (an informer).

The loop lists, files everything in a :class:`~gossamer_kube.store.Store`, then watches from
the list's resourceVersion. Watch events and bookmarks advance the resourceVersion; a watch
that ends normally (server timeout) is simply re-opened from there. A ``410 Gone`` (as an
error or as an ``ERROR`` watch event) means the apiserver no longer has our version, so the
informer relists and the store turns the fresh list into the adds, updates and deletes that
were missed. Any other failure (apiserver restart, connection reset) backs off with jitter
and resumes the watch. Handlers are plain synchronous callables: they run in the event loop
and must only record work, never block.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from gossamer_kube.backoff import Backoff
from gossamer_kube.store import Indexer, KubeObject, Store, StoreEvent, resource_version

log = structlog.get_logger(__name__)

Handler = Callable[[list[StoreEvent]], None]
"""Receives every batch of changes, in order; must not block."""


class ListWatchSource(Protocol):
    """Where an informer reads one kind from; see :mod:`gossamer_kube.sources`."""

    name: str

    async def list(self) -> tuple[list[KubeObject], str]:
        """All objects and the list's resourceVersion."""
        ...

    def watch(self, resource_version: str) -> AsyncIterator[tuple[str, KubeObject]]:
        """``(type, object)`` pairs from ``resource_version`` on; ends on server timeout."""
        ...


class GoneError(Exception):
    """The requested resourceVersion is too old (HTTP 410); a relist is needed."""


def is_gone(exc: BaseException) -> bool:
    """True for any client error that carries HTTP status 410."""
    return isinstance(exc, GoneError) or getattr(exc, "status", None) == 410


@dataclass
class InformerStats:
    """Counters exported as metrics by the services that run informers."""

    lists: int = 0
    relists_gone: int = 0
    watch_restarts: int = 0
    errors: int = 0
    events: int = 0
    bookmarks: int = 0


class Informer:
    """Keeps a :class:`Store` in step with the apiserver and tells handlers what changed."""

    def __init__(
        self,
        source: ListWatchSource,
        *,
        indexers: Mapping[str, Indexer] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.source = source
        self.store = Store(indexers)
        self.stats = InformerStats()
        self.synced = asyncio.Event()
        self._handlers: list[Handler] = []
        self._backoff = backoff or Backoff()
        self._resource_version = ""
        self._task: asyncio.Task[None] | None = None

    @property
    def resource_version(self) -> str:
        return self._resource_version

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"informer-{self.source.name}")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        """Runs until cancelled."""
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch()
                self.stats.watch_restarts += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_gone(exc):
                    self.stats.relists_gone += 1
                    log.info("informer.relist", kind=self.source.name, reason="410 Gone")
                    need_list = True
                    continue
                self.stats.errors += 1
                delay = self._backoff.next_delay()
                log.warning(
                    "informer.error",
                    kind=self.source.name,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=round(delay, 3),
                )
                await asyncio.sleep(delay)

    async def _list(self) -> None:
        items, rv = await self.source.list()
        self.stats.lists += 1
        events = self.store.replace(items)
        self._resource_version = rv
        self._backoff.reset()
        log.debug("informer.listed", kind=self.source.name, count=len(items), rv=rv)
        self._dispatch(events)
        self.synced.set()

    async def _watch(self) -> None:
        async for type_, obj in self.source.watch(self._resource_version):
            self._backoff.reset()
            if type_ == "BOOKMARK":
                self.stats.bookmarks += 1
                self._advance(obj)
                continue
            if type_ == "ERROR":
                if obj.get("code") == 410:
                    raise GoneError(str(obj.get("message", "")))
                raise WatchError(obj)
            self.stats.events += 1
            self._advance(obj)
            if type_ == "DELETED":
                event = self.store.delete(obj)
            elif type_ in ("ADDED", "MODIFIED"):
                event = self.store.upsert(obj)
            else:
                log.warning("informer.unknown_event", kind=self.source.name, type=type_)
                continue
            if event is not None:
                self._dispatch([event])

    def _advance(self, obj: Mapping[str, Any]) -> None:
        rv = resource_version(obj)
        if rv:
            self._resource_version = rv

    def _dispatch(self, events: list[StoreEvent]) -> None:
        if not events:
            return
        for handler in self._handlers:
            try:
                handler(events)
            except Exception:
                log.exception("informer.handler_failed", kind=self.source.name)


class WatchError(Exception):
    """The apiserver sent an ``ERROR`` watch event other than 410 Gone."""

    def __init__(self, status: Mapping[str, Any]) -> None:
        self.status = int(status.get("code") or 0) or None
        super().__init__(f"watch error {status.get('code')}: {status.get('message', '')}")
