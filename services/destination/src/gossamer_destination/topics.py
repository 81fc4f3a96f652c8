"""Shared subscriptions: one topic per distinct question, many streams per topic.

A topic computes its answer once per change and hands the *encoded* message to every
subscribed stream, so fan-out to 1,000 streams costs one translation and one serialization.
Two shapes exist:

- :class:`EndpointTopic` keeps the current endpoint set and publishes the diff (``add`` /
  ``remove``) to the streams; a new stream gets the current set as one ``add``.
- :class:`LatestTopic` publishes a whole message (profile, policy) whenever its encoding
  changes, so streams see no duplicates.

Streams read from a :class:`Subscriber`, a bounded buffer: a stream that falls more than
``capacity`` messages behind is aborted, as Linkerd's ``-stream-queue-capacity`` does.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from gossamer_destination import wire
from gossamer_destination.cluster import Cluster, Key
from gossamer_destination.diff import diff_endpoints
from gossamer_destination.endpoints import Addr, Endpoint


class StreamOverflowError(Exception):
    """The stream's client did not keep up; its subscription was dropped."""


class Subscriber:
    """The buffer between a topic and one gRPC stream.

    A fan-out wakes every stream of a topic, so the wake-up is a bare future rather than an
    :class:`asyncio.Event` (whose ``wait`` allocates a future, a waiter list entry and a
    ``try``/``finally`` per message): one ``set_result`` per push is all a change costs here.
    """

    __slots__ = ("_closed", "_items", "_waiter", "capacity", "overflowed")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False
        self._closed = False

    def push(self, message: bytes) -> None:
        if self._closed:
            return
        if len(self._items) >= self.capacity:
            self.overflowed = True
            self._closed = True
        else:
            self._items.append(message)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def next_batch(self) -> list[bytes]:
        """Waits for messages; raises :class:`StreamOverflowError` once overflowed."""
        while not self._items:
            if self.overflowed:
                raise StreamOverflowError("stream queue overflowed")
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        batch = list(self._items)
        self._items.clear()
        return batch


class Topic:
    """Base: subscribers, dependency bookkeeping and removal when the last stream leaves."""

    def __init__(self, key: Hashable, cluster: Cluster, registry: TopicRegistry) -> None:
        self.key = key
        self.cluster = cluster
        self.registry = registry
        self.subscribers: set[Subscriber] = set()
        self._deps: set[Key] = set()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key!r})"

    def _set_deps(self, deps: set[Key]) -> None:
        if deps == self._deps:
            return
        self.cluster.forget(self, self._deps - deps)
        self.cluster.depend(self, deps - self._deps)
        self._deps = deps

    def _publish(self, message: bytes) -> None:
        for sub in self.subscribers:
            sub.push(message)

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        if not self.subscribers:
            self.cluster.forget(self, self._deps)
            self._deps = set()
            self.registry.drop(self)

    def refresh(self) -> None:
        raise NotImplementedError


EndpointCompute = Callable[[], tuple[dict[Addr, Endpoint] | None, set[Key]]]
"""Returns the endpoint set (``None`` if the service does not exist) and dependencies."""


class EndpointTopic(Topic):
    """The endpoint set of one (service, port, filter) and its changes."""

    def __init__(
        self,
        key: Hashable,
        cluster: Cluster,
        registry: TopicRegistry,
        compute: EndpointCompute,
        set_labels: dict[str, str],
        caller_zone: str | None,
    ) -> None:
        super().__init__(key, cluster, registry)
        self._compute = compute
        self._labels = set_labels
        self._zone = caller_zone
        self.current: dict[Addr, Endpoint] = {}
        self.updates_published = 0
        self._snapshot: bytes | None = None
        self.refresh(publish=False)

    def snapshot(self) -> list[bytes]:
        """What a new stream receives first (encoded once per version of the set)."""
        if self._snapshot is None:
            if self.current:
                update = wire.add_update(self.current.values(), self._labels, self._zone)
            else:
                update = wire.no_endpoints(exists=True)
            self._snapshot = update.SerializeToString(deterministic=True)
        return [self._snapshot]

    def refresh(self, publish: bool = True) -> None:
        endpoints, deps = self._compute()
        self._set_deps(deps)
        new = endpoints or {}
        change = diff_endpoints(self.current, new)
        self.current = new
        if not change:
            return
        self._snapshot = None
        if not publish:
            return
        if change.removed:
            self._publish(wire.remove_update(change.removed).SerializeToString(deterministic=True))
        if change.added:
            self._publish(
                wire.add_update(change.added, self._labels, self._zone).SerializeToString(
                    deterministic=True
                )
            )
        self.updates_published += 1


LatestCompute = Callable[[], tuple[Any | None, set[Key]]]
"""Returns the message to send (``None`` to hold the stream) and dependencies."""


class LatestTopic(Topic):
    """Publishes the latest message whenever its encoding changes."""

    def __init__(
        self, key: Hashable, cluster: Cluster, registry: TopicRegistry, compute: LatestCompute
    ) -> None:
        super().__init__(key, cluster, registry)
        self._compute = compute
        self.current: bytes | None = None
        self.refresh(publish=False)

    def snapshot(self) -> list[bytes]:
        return [self.current] if self.current is not None else []

    def refresh(self, publish: bool = True) -> None:
        message, deps = self._compute()
        self._set_deps(deps)
        if message is None:
            return
        encoded: bytes = message.SerializeToString(deterministic=True)
        if encoded == self.current:
            return
        self.current = encoded
        if publish:
            self._publish(encoded)


class TopicRegistry:
    """Topics by key; a topic lives while at least one stream subscribes to it."""

    def __init__(self) -> None:
        self._topics: dict[Hashable, Topic] = {}

    def __len__(self) -> int:
        return len(self._topics)

    def get_or_create(self, key: Hashable, factory: Callable[[], Topic]) -> Topic:
        topic = self._topics.get(key)
        if topic is None:
            topic = factory()
            self._topics[key] = topic
        return topic

    def drop(self, topic: Topic) -> None:
        if self._topics.get(topic.key) is topic:
            del self._topics[topic.key]

    def subscribe(self, topic: Topic, capacity: int) -> tuple[Subscriber, list[bytes]]:
        """Subscribe and return the initial messages, atomically (no await in between)."""
        sub = Subscriber(capacity)
        topic.subscribers.add(sub)
        snapshot: list[bytes] = topic.snapshot()  # type: ignore[attr-defined]
        return sub, snapshot
