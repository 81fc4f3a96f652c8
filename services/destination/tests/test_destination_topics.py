"""Topics and subscriber buffers: sharing, de-duplication, overflow and cleanup."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gossamer_api.proxy import destination_pb2
from gossamer_destination.cluster import Cluster
from gossamer_destination.endpoints import Endpoint
from gossamer_destination.testing import memory_sources
from gossamer_destination.topics import (
    EndpointTopic,
    LatestTopic,
    StreamOverflowError,
    Subscriber,
    TopicRegistry,
)


async def test_subscriber_batches_and_overflows() -> None:
    sub = Subscriber(capacity=2)
    sub.push(b"a")
    sub.push(b"b")
    assert await sub.next_batch() == [b"a", b"b"]
    sub.push(b"c")
    sub.push(b"d")
    sub.push(b"e")  # one too many: the stream is cut, as Linkerd's queue capacity does
    assert sub.overflowed
    assert await sub.next_batch() == [b"c", b"d"]
    with pytest.raises(StreamOverflowError):
        await asyncio.wait_for(sub.next_batch(), 1)


async def test_a_waiting_stream_wakes_on_push_and_survives_a_cancelled_wait() -> None:
    sub = Subscriber(capacity=4)
    waiting = asyncio.ensure_future(sub.next_batch())
    await asyncio.sleep(0)  # the stream is now parked on its waiter
    sub.push(b"a")
    assert await asyncio.wait_for(waiting, 1) == [b"a"]
    cancelled = asyncio.ensure_future(sub.next_batch())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    sub.push(b"b")  # no waiter left behind to trip over
    assert await asyncio.wait_for(sub.next_batch(), 1) == [b"b"]
    parked = asyncio.ensure_future(sub.next_batch())
    await asyncio.sleep(0)
    for message in (b"c", b"d", b"e", b"f", b"g"):
        sub.push(message)  # the fifth overflows, but the parked stream still gets four
    assert await asyncio.wait_for(parked, 1) == [b"c", b"d", b"e", b"f"]
    with pytest.raises(StreamOverflowError):
        await asyncio.wait_for(sub.next_batch(), 1)


async def test_latest_topic_publishes_only_changes_and_drops_when_unused() -> None:
    cluster = Cluster(dict(memory_sources()))  # type: ignore[arg-type]
    registry = TopicRegistry()
    value: dict[str, Any] = {"fqn": "a"}

    def compute() -> tuple[destination_pb2.DestinationProfile, set[tuple[str, ...]]]:
        return destination_pb2.DestinationProfile(fully_qualified_name=value["fqn"]), {("k",)}

    topic = registry.get_or_create("t", lambda: LatestTopic("t", cluster, registry, compute))
    assert registry.get_or_create("t", lambda: pytest.fail("must reuse")) is topic
    sub, initial = registry.subscribe(topic, 10)
    assert destination_pb2.DestinationProfile.FromString(initial[0]).fully_qualified_name == "a"
    cluster.mark([("k",)])
    cluster.flush()
    value["fqn"] = "b"
    cluster.mark([("k",)])
    cluster.flush()
    (only,) = await sub.next_batch()
    assert destination_pb2.DestinationProfile.FromString(only).fully_qualified_name == "b"
    topic.unsubscribe(sub)
    assert len(registry) == 0
    cluster.mark([("k",)])
    assert not cluster._dirty


async def test_endpoint_topic_snapshot_and_diff_messages() -> None:
    cluster = Cluster(dict(memory_sources()))  # type: ignore[arg-type]
    registry = TopicRegistry()
    current = {("10.0.0.1", 80): Endpoint("10.0.0.1", 80)}

    def compute() -> tuple[dict[tuple[str, int], Endpoint], set[tuple[str, ...]]]:
        return dict(current), {("svc", "ns", "web")}

    topic = EndpointTopic("e", cluster, registry, compute, {"service": "web"}, None)
    sub, initial = registry.subscribe(topic, 10)
    first = destination_pb2.Update.FromString(initial[0])
    assert first.add.metric_labels["service"] == "web"
    assert len(first.add.addrs) == 1
    current.clear()
    current[("10.0.0.2", 80)] = Endpoint("10.0.0.2", 80)
    cluster.mark([("svc", "ns", "web")])
    cluster.flush()
    kinds = [
        destination_pb2.Update.FromString(m).WhichOneof("update") for m in await sub.next_batch()
    ]
    assert kinds == ["remove", "add"]
    # Same set again: nothing is sent.
    cluster.mark([("svc", "ns", "web")])
    cluster.flush()
    assert not sub._items
    _late, late_initial = registry.subscribe(topic, 10)
    assert len(destination_pb2.Update.FromString(late_initial[0]).add.addrs) == 1
