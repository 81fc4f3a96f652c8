"""Topics and subscribers: sharing, de-duplication, catching up after falling behind, cleanup."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import structlog
from gossamer_api.proxy import destination_pb2
from gossamer_destination.cluster import Cluster
from gossamer_destination.endpoints import Endpoint
from gossamer_destination.testing import memory_sources
from gossamer_destination.topics import Change, EndpointTopic, LatestTopic, TopicRegistry
from gossamer_destination.wire import ip_from_proto


def _endpoint_topic(
    current: dict[tuple[str, int], Endpoint],
) -> tuple[Cluster, TopicRegistry, EndpointTopic]:
    cluster = Cluster(dict(memory_sources()))  # type: ignore[arg-type]
    registry = TopicRegistry()

    def compute() -> tuple[dict[tuple[str, int], Endpoint], set[tuple[str, ...]]]:
        return dict(current), {("svc", "ns", "web")}

    topic = EndpointTopic("e", cluster, registry, compute, {"service": "web"}, None)
    return cluster, registry, topic


def _change(cluster: Cluster) -> None:
    cluster.mark([("svc", "ns", "web")])
    cluster.flush()


def _apply(held: set[str], raw: list[bytes]) -> None:
    for message in raw:
        update = destination_pb2.Update.FromString(message)
        if update.WhichOneof("update") == "add":
            held |= {ip_from_proto(a.addr.ip) for a in update.add.addrs}
        else:
            held -= {ip_from_proto(a.ip) for a in update.remove.addrs}


async def test_a_subscriber_that_falls_behind_catches_up_with_one_diff() -> None:
    current = {(f"10.0.0.{i}", 80): Endpoint(f"10.0.0.{i}", 80) for i in (1, 2)}
    cluster, registry, topic = _endpoint_topic(current)
    sub, initial = registry.subscribe(topic, 2)
    held: set[str] = set()
    _apply(held, initial)
    for i in range(3, 9):  # six changes, one add each: more than the buffer holds
        current[(f"10.0.0.{i}", 80)] = Endpoint(f"10.0.0.{i}", 80)
        _change(cluster)
    del current[("10.0.0.1", 80)]
    _change(cluster)
    batch = sub.take()
    # Not seven messages, nor an abort: one remove and one add, from what the reader held.
    kinds = [destination_pb2.Update.FromString(m).WhichOneof("update") for m in batch]
    assert kinds == ["remove", "add"]
    _apply(held, batch)
    assert held == {ip for ip, _ in current}
    # Back in step: the next change arrives as published.
    current[("10.0.0.9", 80)] = Endpoint("10.0.0.9", 80)
    _change(cluster)
    _apply(held, await asyncio.wait_for(sub.next_batch(), 1))
    assert held == {ip for ip, _ in current}


async def test_streams_behind_together_share_one_catch_up_change() -> None:
    current = {("10.0.0.1", 80): Endpoint("10.0.0.1", 80)}
    _cluster, _registry, topic = _endpoint_topic(current)
    state = topic.state
    current[("10.0.0.2", 80)] = Endpoint("10.0.0.2", 80)
    topic.refresh()
    first, new_state = topic.catch_up(state)
    second, _ = topic.catch_up(state)
    assert first is not None
    assert first is second
    assert new_state is topic.state
    assert topic.catch_up(new_state) == (None, new_state)
    assert first.framed[5:] == first.messages[0]  # framed once, on first use
    assert first.framed is first.framed


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
    assert sub.take() == []
    _late, late_initial = registry.subscribe(topic, 10)
    assert len(destination_pb2.Update.FromString(late_initial[0]).add.addrs) == 1


async def test_a_flush_logs_when_the_change_came_and_when_its_writes_went_out() -> None:
    cluster, _registry, topic = _endpoint_topic({("10.0.0.1", 80): Endpoint("10.0.0.1", 80)})
    loop = asyncio.get_running_loop()
    writes: list[float] = []

    class Connection:
        """Queues its write for the next turn, as the gRPC server's connections do."""

        def offer(self, change: Change, prev: object, new: object) -> None:
            loop.call_soon(lambda: writes.append(time.perf_counter()))

    topic.subscribe(Connection())
    topic._compute = lambda: ({("10.0.0.2", 80): Endpoint("10.0.0.2", 80)}, {("svc", "ns", "web")})
    with structlog.testing.capture_logs() as logs:
        cluster.mark([("svc", "ns", "web")])
        for _ in range(3):  # the flush, then the writes and the log line
            await asyncio.sleep(0)
    (event,) = [e for e in logs if e["event"] == "destination.flush"]
    assert event["log_level"] == "debug"
    assert event["refreshed"] == 1
    assert len(writes) == 1
    stamps = [event[k] for k in ("marked_at", "started_at", "finished_at", "written_at")]
    assert stamps == sorted(stamps)
    assert event["finished_at"] <= writes[0] <= event["written_at"]
    assert len(event["collections"]) == 3  # collections in between, by generation
    assert all(n >= 0 for n in event["collections"])
