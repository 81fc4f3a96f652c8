"""Tap across the processes of a multi-core proxy, the parts without sockets.

:class:`FanIn` holds one call's limit over merged events, :class:`RemoteTap` bounds the
workers' events waiting in the parent, :class:`TapRelay` runs a worker's taps for its parent
(frames recorded instead of sent), and connection numbering keeps ids distinct per process.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from gossamer_api.proxy import tap_pb2
from gossamer_proxy import observe
from gossamer_proxy.cores import FrameDecoder
from gossamer_proxy.multicore import Supervisor
from gossamer_proxy.observe import ConnectionFacts, ObserverHub, Observers
from gossamer_proxy.tap.fanin import FanIn
from gossamer_proxy.tap.relay import TapRelay
from gossamer_proxy.tap.remote import RemoteTap
from gossamer_proxy.tap.taps import QUEUE_CAPACITY, Taps

TapEvent = tap_pb2.TapEvent


def _event(kind: str, base: int, stream: int = 1) -> TapEvent:
    event = TapEvent(proxy_direction=TapEvent.INBOUND)
    getattr(event.http, kind).id.CopyFrom(TapEvent.Http.StreamId(base=base, stream=stream))
    return event


def _request(base: int) -> list[TapEvent]:
    return [_event(k, base) for k in ("request_init", "response_init", "response_end")]


# -- FanIn ------------------------------------------------------------------------------------


def test_fan_in_passes_the_first_limit_requests_of_all_processes_and_their_later_events() -> None:
    fan_in = FanIn(2)
    parent_a, worker_b, parent_c = _request(2), _request(3), _request(4)
    # interleaved as they arrive from two processes; c is taken past the limit
    order = [parent_a[0], worker_b[0], parent_c[0], parent_a[1], parent_c[1], worker_b[1]]
    order += [worker_b[2], parent_c[2], parent_a[2]]
    passed = [e for e in order if fan_in.admit(e)]
    assert fan_in.full
    assert {e.http.WhichOneof("event") for e in passed} == {
        "request_init",
        "response_init",
        "response_end",
    }
    bases = sorted(getattr(e.http, e.http.WhichOneof("event")).id.base for e in passed)
    assert bases == [2, 2, 2, 3, 3, 3]  # nothing of request c


def test_fan_in_remembers_a_bounded_number_of_open_requests() -> None:
    fan_in = FanIn(10, max_open=2)
    for base in (1, 2, 3):
        assert fan_in.admit(_event("request_init", base))
    # base 1 was forgotten; before the limit its events still pass ...
    assert fan_in.admit(_event("response_end", 1))
    for base in range(4, 11):
        assert fan_in.admit(_event("request_init", base))
    assert fan_in.full
    assert not fan_in.admit(_event("request_init", 11))
    # ... after it, only remembered requests' events pass (the two most recent)
    assert not fan_in.admit(_event("response_init", 3))
    assert fan_in.admit(_event("response_init", 10))
    assert fan_in.admit(_event("response_end", 9))
    assert not fan_in.admit(TapEvent())  # no HTTP event at all


# -- RemoteTap --------------------------------------------------------------------------------


def test_remote_tap_bounds_what_waits_and_knows_when_workers_are_done() -> None:
    wakes: list[int] = []
    remote = RemoteTap(7, b"", lambda: wakes.append(1), capacity=2)
    remote.asked(1)
    remote.asked(2)
    assert not remote.tapping
    remote.started(1)
    remote.started(2)
    assert remote.tapping
    events = [e.SerializeToString() for e in _request(5)]
    remote.offer(1, events)  # three events, room for two
    assert (len(remote.queue), remote.dropped) == (2, 1)
    remote.offer(3, events)  # never asked: ignored
    assert len(remote.queue) == 2
    remote.finished(1, dropped=4)
    remote.finished(2)
    assert remote.dropped == 5
    assert not remote.done  # still two events to send
    first = remote.next_event()
    assert first is not None
    assert first.http.WhichOneof("event") == "request_init"
    remote.queue.append((2, 1, b"\xff\xff"))  # not a TapEvent: skipped and counted
    assert remote.next_event() is not None
    assert remote.next_event() is None
    assert remote.done
    assert remote.dropped == 6
    assert wakes


def test_remote_tap_holds_each_worker_to_its_credit_and_grants_it_back_as_events_go() -> None:
    grants: list[tuple[int, int]] = []
    remote = RemoteTap(7, b"", lambda: None, capacity=8, window=4, grant=_record(grants))
    remote.asked(1)
    remote.started(1)
    assert remote.room(1) == 4
    assert remote.room(2) == 0  # never asked: no credit
    events = [e.SerializeToString() for e in _request(5) + _request(6)]
    remote.offer(1, events)  # six events against four of credit
    assert (len(remote.queue), remote.dropped, remote.room(1)) == (4, 2, 0)
    assert remote.next_event() is not None  # a quarter of the window taken: granted back
    assert grants == [(1, 1)]
    assert remote.room(1) == 1
    while remote.next_event() is not None:
        pass
    assert grants == [(1, 1)] * 4
    assert remote.room(1) == 4
    # A restarted worker's tap starts with a fresh window; its previous tap's events still
    # waiting earn the new one no extra credit.
    remote.offer(1, events[:2])
    remote.finished(1)
    remote.asked(1)
    while remote.next_event() is not None:
        pass
    assert remote.room(1) == 4
    assert grants == [(1, 1)] * 4


def _record(grants: list[tuple[int, int]]) -> Callable[[int, int], None]:
    return lambda worker, events: grants.append((worker, events))


# -- TapRelay ---------------------------------------------------------------------------------


class _Clock:
    now = 10.0

    def __call__(self) -> float:
        return self.now


def _serve_one(observers: Observers, connection: ConnectionFacts, stream: int) -> None:
    live = observers.begin(
        connection,
        stream,
        method=b"GET",
        scheme=b"http",
        authority=b"web:80",
        path=f"/r{stream}".encode(),
        uri=b"/",
        version="HTTP/1.1",
        headers=[],
        now=10.0,
    )
    assert live is not None
    live.forwarded(10.001)
    live.response(200, [], 10.002)
    live.end(10.003, grpc_status=None)


async def test_relay_runs_the_parents_tap_and_sends_events_back_in_frames() -> None:
    hub = ObserverHub(clock=_Clock())
    compiled: dict[str, Observers | None] = {}
    hub.attach("inbound", lambda o: compiled.__setitem__("inbound", o))
    taps = Taps(hub)
    frames: list[dict[str, Any]] = []
    sent = asyncio.Event()

    async def send(frame: dict[str, Any]) -> None:
        frames.append(frame)
        sent.set()

    relay = TapRelay(taps, send)
    request = tap_pb2.ObserveRequest(limit=5).SerializeToString()
    assert relay.handle(
        {
            "type": "tap_start",
            "tap": 9,
            "request": base64.b64encode(request).decode(),
            "credit": 100,
        }
    )
    assert not relay.handle({"type": "metrics", "id": 1})
    observers = compiled["inbound"]
    assert observers is not None  # the worker's requests are observed from now on
    connection = ConnectionFacts("inbound", ("10.0.0.1", 5000), ("10.0.0.2", 80), None)
    _serve_one(observers, connection, 1)
    _serve_one(observers, connection, 2)
    relay.handle({"type": "tap_limit", "tap": 9})  # the call's limit is reached elsewhere
    async with asyncio.timeout(10):
        while not any(f["type"] == "tap_done" for f in frames):
            sent.clear()
            await sent.wait()
    assert frames[0] == {"type": "tap_started", "tap": 9}
    events = [
        TapEvent.FromString(base64.b64decode(e))
        for f in frames
        if f["type"] == "tap_events"
        for e in f["events"]
    ]
    assert [e.http.request_init.path for e in events if e.http.HasField("request_init")] == [
        "/r1",
        "/r2",
    ]
    assert len(events) == 6
    assert frames[-1] == {"type": "tap_done", "tap": 9, "dropped": 0}
    assert compiled["inbound"] is None  # done: the request path is back to no observers
    await relay.close()


async def test_relay_sends_no_more_events_than_its_credit_and_drops_the_rest() -> None:
    hub = ObserverHub(clock=_Clock())
    compiled: dict[str, Observers | None] = {}
    hub.attach("inbound", lambda o: compiled.__setitem__("inbound", o))
    taps = Taps(hub)
    frames: list[dict[str, Any]] = []
    sent = asyncio.Event()

    async def send(frame: dict[str, Any]) -> None:
        frames.append(frame)
        sent.set()

    def events_sent() -> int:
        return sum(len(f["events"]) for f in frames if f["type"] == "tap_events")

    async def until(condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not condition():
                sent.clear()
                await sent.wait()

    relay = TapRelay(taps, send)
    request = tap_pb2.ObserveRequest(limit=1000).SerializeToString()
    relay.handle(
        {
            "type": "tap_start",
            "tap": 4,
            "request": base64.b64encode(request).decode(),
            "credit": 2,
        }
    )
    observers = compiled["inbound"]
    assert observers is not None
    connection = ConnectionFacts("inbound", ("10.0.0.1", 5000), ("10.0.0.2", 80), None)
    _serve_one(observers, connection, 1)
    _serve_one(observers, connection, 2)  # six events
    await until(lambda: events_sent() == 2)
    (tap,) = taps.active
    assert len(tap.queue) == 4  # no credit: they wait in the worker's bounded queue
    for stream in range(3, 3 + 400):  # far more than the queue holds: dropped there
        _serve_one(observers, connection, stream)
    assert tap.dropped > 0
    relay.handle({"type": "tap_credit", "tap": 4, "credit": 3})
    relay.handle({"type": "tap_credit", "tap": 4, "credit": True})  # malformed: ignored
    await until(lambda: events_sent() == 5)
    relay.handle({"type": "tap_stop", "tap": 4})
    await until(lambda: frames[-1]["type"] == "tap_done")
    assert events_sent() == 5
    assert frames[-1]["dropped"] == tap.dropped > 0
    await relay.close()


async def test_relay_refuses_a_start_without_credit() -> None:
    frames: list[dict[str, Any]] = []

    async def send(frame: dict[str, Any]) -> None:
        frames.append(frame)

    relay = TapRelay(Taps(ObserverHub(clock=_Clock())), send)
    request = base64.b64encode(tap_pb2.ObserveRequest(limit=1).SerializeToString()).decode()
    relay.handle({"type": "tap_start", "tap": 5, "request": request})
    async with asyncio.timeout(10):
        while not frames:  # noqa: ASYNC110 - the refusal is sent by a task
            await asyncio.sleep(0)
    assert frames == [{"type": "tap_done", "tap": 5, "dropped": 0}]


async def test_relay_answers_a_bad_start_with_done() -> None:
    frames: list[dict[str, Any]] = []

    async def send(frame: dict[str, Any]) -> None:
        frames.append(frame)

    relay = TapRelay(Taps(ObserverHub(clock=_Clock())), send)
    relay.handle({"type": "tap_start", "tap": 3, "request": "not base64!"})
    relay.handle({"type": "tap_stop", "tap": 4})  # unknown: nothing to stop
    async with asyncio.timeout(10):
        while not frames:  # noqa: ASYNC110 - the refusal is sent by a task
            await asyncio.sleep(0)
    assert frames == [{"type": "tap_done", "tap": 3, "dropped": 0}]


# -- connection numbering ---------------------------------------------------------------------


def test_processes_number_their_connections_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observe, "_connection_ids", observe._connection_ids)  # restored after
    observe.number_connections(1, 3)
    ids = [ConnectionFacts("inbound", None, None, None).connection_id for _ in range(3)]
    assert ids == [4, 7, 10]
    assert {i % 3 for i in ids} == {1}
    with pytest.raises(ValueError, match=r"not in 0\.\.2"):
        observe.number_connections(3, 3)


def test_a_restarted_worker_numbers_its_connections_apart_from_its_predecessor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(observe, "_connection_ids", observe._connection_ids)  # restored after

    def first_ids(generation: int) -> list[int]:
        observe.number_connections(1, 3, generation)
        return [ConnectionFacts("inbound", None, None, None).connection_id for _ in range(1000)]

    before, after = first_ids(0), first_ids(1)
    assert not set(before) & set(after)  # same index, new generation: no StreamId reused
    assert {i % 3 for i in after} == {1}  # still tells which process served it
    assert max(after) < 1 << 32  # within a StreamId's base
    with pytest.raises(ValueError, match="negative"):
        observe.number_connections(1, 3, -1)


def test_the_start_message_carries_the_workers_restart_generation() -> None:
    admin = SimpleNamespace(ready=lambda: True, render_metrics=None, port=4191)
    settings = SimpleNamespace(admin_listen=SimpleNamespace(host="127.0.0.1"))
    proxy: Any = SimpleNamespace(
        identity=None,
        admin=admin,
        ready=True,
        tap_server=None,
        settings=settings,
        contexts=[],
        inbound_addr=SimpleNamespace(host="0.0.0.0", port=4143),
    )
    supervisor = Supervisor(proxy, cores=2)
    assert supervisor.workers[0].generation == -1  # not started yet
    assert supervisor._start_message(3)["generation"] == 3


# -- the supervisor as the tap service's RemoteTaps --------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def frames(self) -> list[dict[str, Any]]:
        frames, self.data = FrameDecoder().feed(self.data), b""
        return frames


def test_supervisor_starts_each_call_on_serving_workers_and_routes_their_answers() -> None:
    service = SimpleNamespace(remote=None)
    admin = SimpleNamespace(ready=lambda: True, render_metrics=None)
    proxy: Any = SimpleNamespace(
        identity=None, admin=admin, ready=True, tap_server=SimpleNamespace(service=service)
    )
    supervisor = Supervisor(proxy, cores=3)
    assert service.remote is supervisor  # the parent's tap service taps the workers
    first, second = supervisor.workers
    first.writer, first.ready = _Writer(), True  # type: ignore[assignment]
    second.writer = _Writer()  # type: ignore[assignment]  # started, not ready yet
    wakes: list[int] = []
    remote = supervisor.open(tap_pb2.ObserveRequest(limit=3), lambda: wakes.append(1))
    (start,) = first.writer.frames()  # type: ignore[attr-defined]
    assert start["type"] == "tap_start"
    assert tap_pb2.ObserveRequest.FromString(base64.b64decode(start["request"])).limit == 3
    assert second.writer.frames() == []  # type: ignore[attr-defined]
    assert not remote.tapping
    supervisor._on_message(first, {"type": "tap_started", "tap": start["tap"]})
    assert remote.tapping
    supervisor._on_message(second, {"type": "ready"})  # a worker ready later joins the call
    assert [f["type"] for f in second.writer.frames()] == ["tap_start"]  # type: ignore[attr-defined]
    encoded = [base64.b64encode(e.SerializeToString()).decode() for e in _request(4)]
    supervisor._on_message(first, {"type": "tap_events", "tap": start["tap"], "events": encoded})
    supervisor._on_message(first, {"type": "tap_events", "tap": 99, "events": encoded})  # unknown
    assert len(remote.queue) == 3
    supervisor.limit(remote)
    for worker in (first, second):
        assert [f["type"] for f in worker.writer.frames()] == ["tap_limit"]  # type: ignore[attr-defined]
    supervisor._on_message(first, {"type": "tap_done", "tap": start["tap"], "dropped": 2})
    assert remote.pending == {second.index}
    assert remote.dropped == 2
    supervisor.close(remote)
    assert [f["type"] for f in second.writer.frames()] == ["tap_stop"]  # type: ignore[attr-defined]
    assert first.writer.frames() == []  # type: ignore[attr-defined]  # done: nothing to stop
    assert supervisor.taps == {}
    assert wakes


def test_supervisor_decodes_no_more_than_a_workers_credit_and_grants_as_the_client_reads() -> None:
    service = SimpleNamespace(remote=None)
    admin = SimpleNamespace(ready=lambda: True, render_metrics=None)
    proxy: Any = SimpleNamespace(
        identity=None, admin=admin, ready=True, tap_server=SimpleNamespace(service=service)
    )
    supervisor = Supervisor(proxy, cores=3)
    first, _ = supervisor.workers
    writer = _Writer()
    first.writer, first.ready = writer, True  # type: ignore[assignment]
    remote = supervisor.open(tap_pb2.ObserveRequest(limit=3), lambda: None)
    (start,) = writer.frames()
    window = start["credit"]
    assert window == QUEUE_CAPACITY // 2  # two workers' windows fit the call's queue
    supervisor._on_message(first, {"type": "tap_started", "tap": start["tap"]})
    event = base64.b64encode(_request(4)[0].SerializeToString()).decode()
    # A worker past its credit: the excess is dropped without being decoded.
    supervisor._on_message(
        first, {"type": "tap_events", "tap": start["tap"], "events": [event] * window}
    )
    supervisor._on_message(first, {"type": "tap_events", "tap": start["tap"], "events": ["?"] * 10})
    assert (len(remote.queue), remote.dropped) == (window, 10)
    taken = 0
    while remote.next_event() is not None:
        taken += 1
    assert taken == window
    grants = writer.frames()
    assert {f["type"] for f in grants} == {"tap_credit"}
    assert sum(f["credit"] for f in grants) == window
    assert remote.room(first.index) == window
