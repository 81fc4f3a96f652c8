"""Shared subscriptions: one topic per distinct question, many streams per topic.

A topic computes its answer once per change and hands the same :class:`Change` (the encoded
messages, and their gRPC framing built once on first use) to every subscribed stream, so a
fan-out to 1,000 streams costs one translation, one serialization and one framing. Two
shapes exist:

- :class:`EndpointTopic` keeps the current endpoint set and publishes the diff (``add`` /
  ``remove``) to the streams; a new stream gets the current set as one ``add``.
- :class:`LatestTopic` publishes a whole message (profile, policy) whenever its encoding
  changes, so streams see no duplicates.

Each topic has a *state* (the endpoint set, or the latest message), replaced, never mutated,
on every change. A stream remembers the state its client will hold once what it was sent
arrives. A stream that keeps up takes each change as published (``prev`` is its state); one
that fell behind (its client reads slowly) drops the changes it could not send and later
asks :meth:`Topic.catch_up` for one change from its state to the current one. So a slow
reader costs at most one pending change, never a queue of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from gossamer_destination import wire
from gossamer_destination.cluster import Cluster, Key
from gossamer_destination.diff import diff_endpoints
from gossamer_destination.endpoints import Addr, Endpoint

GRPC_MESSAGE_PREFIX_LENGTH = 5


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: uncompressed flag, big-endian length, bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


class Change:
    """The messages taking a client from one state of a topic to another."""

    __slots__ = ("_framed", "messages")

    def __init__(self, messages: tuple[bytes, ...]) -> None:
        self.messages = messages
        self._framed: bytes | None = None

    @property
    def framed(self) -> bytes:
        """The messages as one gRPC byte stream, built once for every stream that sends it."""
        if self._framed is None:
            self._framed = b"".join(grpc_frame(m) for m in self.messages)
        return self._framed


class Watcher(Protocol):
    """A subscriber: takes the changes a topic publishes."""

    def offer(self, change: Change, prev: object, new: object) -> None:
        """``change`` takes a client from state ``prev`` to ``new``."""


class Topic:
    """Base: subscribers, dependency bookkeeping and removal when the last stream leaves."""

    def __init__(self, key: Hashable, cluster: Cluster, registry: TopicRegistry) -> None:
        self.key = key
        self.cluster = cluster
        self.registry = registry
        self.subscribers: set[Watcher] = set()
        self._deps: set[Key] = set()
        self._catch_up: tuple[object, object, Change | None] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key!r})"

    def _set_deps(self, deps: set[Key]) -> None:
        if deps == self._deps:
            return
        self.cluster.forget(self, self._deps - deps)
        self.cluster.depend(self, deps - self._deps)
        self._deps = deps

    @property
    def state(self) -> object:
        raise NotImplementedError

    def initial(self) -> Change | None:
        """What a new stream receives first (``None``: nothing yet, hold the stream)."""
        raise NotImplementedError

    def _change_from(self, state: object) -> Change | None:
        raise NotImplementedError

    def catch_up(self, state: object) -> tuple[Change | None, object]:
        """One change from ``state`` to the current state (``None`` if they are the same).

        Streams that fell behind together usually share their state, so the last answer is
        kept until the topic changes.
        """
        current = self.state
        if state is current:
            return None, current
        cached = self._catch_up
        if cached is not None and cached[0] is state and cached[1] is current:
            return cached[2], current
        change = self._change_from(state)
        self._catch_up = (state, current, change)
        return change, current

    def subscribe(self, watcher: Watcher) -> tuple[Change | None, object]:
        """Subscribe and return the initial change and the state it leads to, atomically."""
        self.subscribers.add(watcher)
        return self.initial(), self.state

    def _publish(self, change: Change, prev: object, new: object) -> None:
        self._catch_up = None
        for watcher in self.subscribers:
            watcher.offer(change, prev, new)

    def unsubscribe(self, watcher: Watcher) -> None:
        self.subscribers.discard(watcher)
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
        self._snapshot: Change | None = None
        self.refresh(publish=False)

    @property
    def state(self) -> object:
        return self.current

    def initial(self) -> Change:
        """The current set as one ``add`` (encoded once per version of the set)."""
        if self._snapshot is None:
            if self.current:
                update = wire.add_update(self.current.values(), self._labels, self._zone)
            else:
                update = wire.no_endpoints(exists=True)
            self._snapshot = Change((update.SerializeToString(deterministic=True),))
        return self._snapshot

    def _change_from(self, state: object) -> Change | None:
        if not isinstance(state, dict):
            return self.initial()
        return self._diff_change(state, self.current)

    def _diff_change(self, old: dict[Addr, Endpoint], new: dict[Addr, Endpoint]) -> Change | None:
        change = diff_endpoints(old, new)
        if not change:
            return None
        messages = []
        if change.removed:
            messages.append(
                wire.remove_update(change.removed).SerializeToString(deterministic=True)
            )
        if change.added:
            update = wire.add_update(change.added, self._labels, self._zone)
            messages.append(update.SerializeToString(deterministic=True))
        return Change(tuple(messages))

    def refresh(self, publish: bool = True) -> None:
        endpoints, deps = self._compute()
        self._set_deps(deps)
        new = endpoints or {}
        old = self.current
        change = self._diff_change(old, new)
        if change is None:
            return  # the state object stays, so streams that are in step stay in step
        self.current = new
        self._snapshot = None
        if publish:
            self._publish(change, old, new)
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
        self._change: Change | None = None
        self.refresh(publish=False)

    @property
    def state(self) -> object:
        return self.current

    def initial(self) -> Change | None:
        return self._change

    def _change_from(self, state: object) -> Change | None:
        return self._change

    def refresh(self, publish: bool = True) -> None:
        message, deps = self._compute()
        self._set_deps(deps)
        if message is None:
            return
        encoded: bytes = message.SerializeToString(deterministic=True)
        if encoded == self.current:
            return
        prev = self.current
        self.current = encoded
        self._change = Change((encoded,))
        if publish:
            self._publish(self._change, prev, encoded)


class Subscriber:
    """An in-process watcher with a bounded buffer, for unary answers and tests.

    Holds at most ``capacity`` messages; past that it drops what it holds and, when next
    read, catches up from the state its reader last took to the topic's current state.
    """

    __slots__ = ("_delivered", "_items", "_queued_state", "_stale", "_waiter", "capacity", "topic")

    def __init__(self, topic: Topic, capacity: int) -> None:
        self.topic = topic
        self.capacity = capacity
        self._items: list[bytes] = []
        self._delivered: object = None
        self._queued_state: object = None
        self._stale = False
        self._waiter: asyncio.Future[None] | None = None

    def start(self) -> list[bytes]:
        change, state = self.topic.subscribe(self)
        self._delivered = self._queued_state = state
        return list(change.messages) if change is not None else []

    def offer(self, change: Change, prev: object, new: object) -> None:
        if self._stale or prev is not self._queued_state:
            self._stale = True
        elif len(self._items) + len(change.messages) > self.capacity:
            self._items.clear()
            self._stale = True
        else:
            self._items.extend(change.messages)
            self._queued_state = new
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> list[bytes]:
        """Everything buffered since the last call (coalesced if the buffer overflowed)."""
        if self._stale:
            change, state = self.topic.catch_up(self._delivered)
            self._stale = False
            self._items = list(change.messages) if change is not None else []
            self._queued_state = state
        batch, self._items = self._items, []
        self._delivered = self._queued_state
        return batch

    async def next_batch(self) -> list[bytes]:
        """Waits until there is something to take, then takes it."""
        while True:
            while not self._items and not self._stale:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            batch = self.take()
            if batch:
                return batch

    def close(self) -> None:
        self.topic.unsubscribe(self)


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
        """An in-process subscriber and the initial messages, atomically."""
        sub = Subscriber(topic, capacity)
        return sub, sub.start()
