"""An indexed, in-memory copy of one resource kind, kept in step with the apiserver.

The store is sans-io: the informer feeds it list results and watch events, and it answers
with :class:`StoreEvent` values saying what changed. A relist (after 410 Gone or a broken
watch) is turned into the adds, updates and deletes that bring the old contents to the new
ones, so handlers never see a gap or a phantom object.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

KubeObject = dict[str, Any]
"""A Kubernetes object as decoded JSON."""

ObjectKey = tuple[str, str]
"""``(namespace, name)``; the namespace is ``""`` for cluster-scoped kinds."""

Indexer = Callable[[KubeObject], Iterable[str]]
"""Returns the index values an object is filed under (none, one or several)."""


class EventKind(enum.Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class StoreEvent:
    """One change to the store: ``old`` is ``None`` for adds, ``new`` is ``None`` for deletes."""

    kind: EventKind
    old: KubeObject | None
    new: KubeObject | None

    @property
    def obj(self) -> KubeObject:
        """The object as it is now, or as it was last seen for a delete."""
        obj = self.new if self.new is not None else self.old
        assert obj is not None
        return obj


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Store:
    """Objects of one kind by key, plus any number of named secondary indexes."""

    def __init__(self, indexers: Mapping[str, Indexer] | None = None) -> None:
        self._objects: dict[ObjectKey, KubeObject] = {}
        self._indexers: dict[str, Indexer] = dict(indexers or {})
        self._indexes: dict[str, dict[str, set[ObjectKey]]] = {n: {} for n in self._indexers}

    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self) -> Iterator[KubeObject]:
        return iter(list(self._objects.values()))

    def get(self, namespace: str, name: str) -> KubeObject | None:
        return self._objects.get((namespace, name))

    def objects(self, namespace: str | None = None) -> list[KubeObject]:
        """All objects, or those of one namespace."""
        if namespace is None:
            return list(self._objects.values())
        return [o for (ns, _), o in self._objects.items() if ns == namespace]

    def by_index(self, index: str, value: str) -> list[KubeObject]:
        """Objects filed under ``value`` in ``index``; ``KeyError`` for an unknown index."""
        keys = self._indexes[index].get(value, ())
        return [self._objects[k] for k in keys]

    def index_values(self, index: str) -> list[str]:
        return list(self._indexes[index])

    def add_indexer(self, name: str, indexer: Indexer) -> None:
        """Adds an index later (before or after objects arrive)."""
        self._indexers[name] = indexer
        self._indexes[name] = {}
        for key, obj in self._objects.items():
            self._index_one(name, key, obj)

    # -- mutations, each returning what changed -------------------------------------------

    def upsert(self, obj: KubeObject) -> StoreEvent | None:
        """Adds or replaces ``obj``; ``None`` if the same resourceVersion is already held."""
        key = object_key(obj)
        old = self._objects.get(key)
        if old is not None:
            rv = resource_version(obj)
            if rv and rv == resource_version(old):
                return None
        self._unindex(key, old)
        self._objects[key] = obj
        for name in self._indexers:
            self._index_one(name, key, obj)
        if old is None:
            return StoreEvent(EventKind.ADDED, None, obj)
        return StoreEvent(EventKind.MODIFIED, old, obj)

    def delete(self, obj: Mapping[str, Any]) -> StoreEvent | None:
        """Removes the object with ``obj``'s key; ``None`` if it was not held."""
        key = object_key(obj)
        old = self._objects.pop(key, None)
        if old is None:
            return None
        self._unindex(key, old)
        return StoreEvent(EventKind.DELETED, old, None)

    def replace(self, objects: Iterable[KubeObject]) -> list[StoreEvent]:
        """Makes the store hold exactly ``objects`` (a fresh list), returning the difference."""
        fresh = {object_key(o): o for o in objects}
        events: list[StoreEvent] = []
        for key in [k for k in self._objects if k not in fresh]:
            gone = self.delete({"metadata": {"namespace": key[0], "name": key[1]}})
            if gone is not None:
                events.append(gone)
        for obj in fresh.values():
            event = self.upsert(obj)
            if event is not None:
                events.append(event)
        return events

    # -- index bookkeeping ----------------------------------------------------------------

    def _index_one(self, name: str, key: ObjectKey, obj: KubeObject) -> None:
        index = self._indexes[name]
        for value in self._indexers[name](obj):
            index.setdefault(value, set()).add(key)

    def _unindex(self, key: ObjectKey, obj: KubeObject | None) -> None:
        if obj is None:
            return
        for name, indexer in self._indexers.items():
            index = self._indexes[name]
            for value in indexer(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
