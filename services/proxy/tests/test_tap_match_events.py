"""Tap's match, events, limits and bounded queues (sans-io: no sockets, times passed in)."""

from __future__ import annotations

import pytest
from gossamer_api.addresses import ip_to_proto
from gossamer_api.proxy import http_types_pb2, tap_pb2
from gossamer_proxy.observe import (
    ConnectionFacts,
    ObservedRequest,
    ObserverHub,
    Observers,
)
from gossamer_proxy.tap.match import MAX_DEPTH, InvalidMatchError, compile_match
from gossamer_proxy.tap.taps import Taps, TooManyTapsError

Match = tap_pb2.ObserveRequest.Match
TapEvent = tap_pb2.TapEvent


class _Clock:
    """The seam's fine clock, set by the test (times are injected, never read)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


CLOCK = _Clock()


def _request(
    *,
    direction: str = "inbound",
    source: tuple[str, int] = ("10.1.0.5", 40000),
    destination: tuple[str, int] = ("10.1.0.9", 8080),
    method: bytes = b"GET",
    path: bytes = b"/books/1",
    authority: bytes = b"web.demo.svc.cluster.local:8080",
    client_id: str | None = "vote.demo.serviceaccount.identity.gossamer.cluster.local",
    headers: list[tuple[bytes, bytes]] | None = None,
    now: float = 100.0,
    stream: int = 3,
) -> ObservedRequest:
    facts = ConnectionFacts(direction, source, destination, client_id)
    return ObservedRequest(
        facts,
        stream,
        method=method,
        scheme=b"http",
        authority=authority,
        path=path,
        uri=path,
        version="HTTP/1.1",
        headers=headers or [(b"user-agent", b"curl/8")],
        now=now,
        clock=CLOCK,
    )


def _observe(match: Match | None = None, limit: int = 10) -> tap_pb2.ObserveRequest:
    request = tap_pb2.ObserveRequest(limit=limit)
    if match is not None:
        request.match.CopyFrom(match)
    return request


def _matches(match: Match, request: ObservedRequest) -> bool:
    return compile_match(_observe(match)).matches(request)


def _http(**kwargs: object) -> Match:
    return Match(http=Match.Http(**kwargs))  # type: ignore[arg-type]


def _netmask(ip: str, mask: int) -> Match.Tcp:
    return Match.Tcp(netmask=Match.Tcp.Netmask(ip=ip_to_proto(ip), mask=mask))


def test_no_match_and_empty_sequences_match_everything() -> None:
    request = _request()
    assert compile_match(_observe()).matches(request)
    assert compile_match(_observe(Match())).matches(request)
    assert _matches(Match(all=Match.Seq()), request)
    assert _matches(Match(any=Match.Seq()), request)


def test_http_fields() -> None:
    request = _request()
    get = http_types_pb2.HttpMethod(registered=http_types_pb2.HttpMethod.GET)
    post = http_types_pb2.HttpMethod(registered=http_types_pb2.HttpMethod.POST)
    purge = http_types_pb2.HttpMethod(unregistered="PURGE")
    assert _matches(_http(method=get), request)
    assert not _matches(_http(method=post), request)
    assert _matches(_http(method=purge), _request(method=b"PURGE"))
    prefix = Match.Http.StringMatch(prefix="/books")
    exact = Match.Http.StringMatch(exact="/books")
    assert _matches(_http(path=prefix), request)
    assert not _matches(_http(path=exact), request)
    authority = Match.Http.StringMatch(exact="WEB.demo.svc.cluster.local:8080")
    assert _matches(_http(authority=authority), request)  # authorities compare caseless
    https = http_types_pb2.Scheme(registered=http_types_pb2.Scheme.HTTPS)
    http = http_types_pb2.Scheme(registered=http_types_pb2.Scheme.HTTP)
    assert not _matches(_http(scheme=https), request)
    assert _matches(_http(scheme=http), request)


def test_tcp_netmask_and_ports() -> None:
    request = _request()
    assert _matches(Match(source=_netmask("10.1.0.0", 16)), request)
    assert not _matches(Match(source=_netmask("10.2.0.0", 16)), request)
    assert _matches(Match(destination=_netmask("10.1.0.9", 32)), request)
    assert not _matches(Match(destination=_netmask("::", 0)), request)  # family differs
    ports = Match.Tcp(ports=Match.Tcp.PortRange(min=8000, max=8999))
    assert _matches(Match(destination=ports), request)
    assert not _matches(Match(source=ports), request)
    mapped = _request(source=("::ffff:10.1.0.5", 1))
    assert _matches(Match(source=_netmask("10.1.0.5", 32)), mapped)


def test_labels_and_combinators() -> None:
    request = _request(direction="outbound")
    request.forwarded(100.1, dst_labels=[("dst_deployment", "web"), ("dst_namespace", "demo")])
    dep = Match(destination_label=Match.Label(key="deployment", value="web"))
    other = Match(destination_label=Match.Label(key="deployment", value="api"))
    assert _matches(dep, request)
    assert not _matches(other, request)
    assert _matches(Match(any=Match.Seq(matches=[other, dep])), request)
    assert not _matches(Match(all=Match.Seq(matches=[other, dep])), request)
    assert _matches(Match(**{"not": other}), request)
    request.route_labels["route"] = "books"
    assert _matches(Match(route_label=Match.Label(key="route", value="books")), request)


@pytest.mark.parametrize(
    ("match", "reason"),
    [
        (Match(source=Match.Tcp()), "neither netmask nor ports"),
        (Match(source=_netmask("10.0.0.0", 33)), "longer than the address"),
        (
            Match(destination=Match.Tcp(ports=Match.Tcp.PortRange(min=90, max=80))),
            "0-65535 in order",
        ),
        (Match(http=Match.Http()), "no condition"),
        (_http(path=Match.Http.StringMatch()), "neither exact nor prefix"),
        (Match(all=Match.Seq(matches=[Match()])), "no condition set"),
        (Match(destination_label=Match.Label(value="x")), "no key"),
    ],
)
def test_bad_matches_are_refused_with_a_reason(match: Match, reason: str) -> None:
    with pytest.raises(InvalidMatchError, match=reason):
        compile_match(_observe(match))


def test_deep_and_wide_matches_are_refused() -> None:
    leaf = Match(route_label=Match.Label(key="a", value="b"))
    deep = leaf
    for _ in range(MAX_DEPTH + 1):
        deep = Match(**{"not": deep})
    with pytest.raises(InvalidMatchError, match="deeper"):
        compile_match(_observe(deep))
    wide = Match(any=Match.Seq(matches=[leaf] * 300))
    with pytest.raises(InvalidMatchError, match="nodes"):
        compile_match(_observe(wide))


class _Waker:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def _run(observers: Observers, request: ObservedRequest, *, status: int = 200) -> None:
    """Drive one request through the seam the way the protocol servers do."""
    CLOCK.now = request.started_at
    live = observers.begin(
        request.connection,
        request.stream_id,
        method=request.method,
        scheme=request.scheme,
        authority=request.authority,
        path=request.path,
        uri=request.uri,
        version=request.version,
        headers=request.headers,
        now=request.started_at,
    )
    if live is None:
        return
    live.forwarded(request.started_at + 0.001)
    CLOCK.now = request.started_at + 0.010
    live.response(status, [(b"content-type", b"text/plain")], CLOCK.now)
    live.response_bytes += 11
    CLOCK.now = request.started_at + 0.015
    live.end(CLOCK.now, grpc_status=None)


def _hub() -> tuple[ObserverHub, dict[str, Observers | None]]:
    hub = ObserverHub(clock=CLOCK)
    compiled: dict[str, Observers | None] = {}
    hub.attach("inbound", lambda obs: compiled.__setitem__("inbound", obs))
    hub.attach("outbound", lambda obs: compiled.__setitem__("outbound", obs))
    return hub, compiled


def test_tap_registers_only_while_active_and_emits_three_events() -> None:
    hub, compiled = _hub()
    taps = Taps(hub)
    assert compiled == {"inbound": None, "outbound": None}
    waker = _Waker()
    tap = taps.start(compile_match(_observe()), limit=5, headers=True, wake=waker)
    observers = compiled["inbound"]
    assert observers is not None
    _run(observers, _request())
    events = [tap.next_event() for _ in range(3)]
    assert tap.next_event() is None
    kinds = [e.http.WhichOneof("event") if e else None for e in events]
    assert kinds == ["request_init", "response_init", "response_end"]
    init, rsp, end = (e.http for e in events if e is not None)
    assert init.request_init.id.stream == 3
    assert init.request_init.method.registered == http_types_pb2.HttpMethod.GET
    assert init.request_init.path == "/books/1"
    assert init.request_init.authority == "web.demo.svc.cluster.local:8080"
    assert [(h.name, h.value) for h in init.request_init.headers.headers] == [
        ("user-agent", b"curl/8")
    ]
    assert rsp.response_init.http_status == 200
    assert rsp.response_init.since_request_init.ToNanoseconds() == 10_000_000
    assert end.response_end.response_bytes == 11
    assert end.response_end.since_request_init.ToNanoseconds() == 15_000_000
    assert end.response_end.since_response_init.ToNanoseconds() == 5_000_000
    assert not end.response_end.HasField("eos")
    first = events[0]
    assert first is not None
    assert first.proxy_direction == TapEvent.INBOUND
    assert first.source.port == 40000
    assert first.destination.port == 8080
    assert first.source_meta.labels["tls"] == "true"
    assert waker.calls >= 3
    taps.stop(tap)
    assert compiled == {"inbound": None, "outbound": None}


def test_limit_counts_requests_and_tap_is_done_when_they_end() -> None:
    hub, compiled = _hub()
    taps = Taps(hub)
    tap = taps.start(compile_match(_observe()), limit=2, headers=False, wake=_Waker())
    observers = compiled["outbound"]
    assert observers is not None
    for stream in range(1, 5):
        _run(observers, _request(direction="outbound", stream=stream))
    streams = []
    while (event := tap.next_event()) is not None:
        if event.http.WhichOneof("event") == "request_init":
            streams.append(event.http.request_init.id.stream)
            assert not event.http.request_init.HasField("headers")
    assert streams == [1, 2]
    assert tap.done
    # A used-up limit stops the observing at once: requests no longer pay for the tap.
    assert compiled["outbound"] is None


def test_unmatched_requests_are_not_taken() -> None:
    hub, compiled = _hub()
    taps = Taps(hub)
    match = _http(path=Match.Http.StringMatch(prefix="/api"))
    tap = taps.start(compile_match(_observe(match)), limit=1, headers=False, wake=_Waker())
    observers = compiled["inbound"]
    assert observers is not None
    _run(observers, _request(path=b"/books"))
    assert tap.next_event() is None
    _run(observers, _request(path=b"/api/x"))
    assert tap.next_event() is not None


def test_a_full_queue_drops_and_never_grows() -> None:
    hub, compiled = _hub()
    taps = Taps(hub)
    tap = taps.start(
        compile_match(_observe()), limit=1000, headers=False, wake=_Waker(), capacity=4
    )
    observers = compiled["inbound"]
    assert observers is not None
    for stream in range(10):
        _run(observers, _request(stream=stream))
    assert len(tap.queue) == 4
    assert tap.dropped == 26


def test_grpc_status_and_reset_codes_end_the_stream() -> None:
    hub, compiled = _hub()
    taps = Taps(hub)
    tap = taps.start(compile_match(_observe()), limit=2, headers=False, wake=_Waker())
    observers = compiled["inbound"]
    assert observers is not None
    facts = ConnectionFacts("inbound", ("10.0.0.1", 1), ("10.0.0.2", 2), None)
    grpc = observers.begin_h2(facts, 1, [(b":method", b"POST"), (b":path", b"/a.B/C")], 0.0)
    reset = observers.begin_h2(facts, 3, [(b":method", b"GET"), (b":path", b"/")], 0.0)
    assert grpc is not None
    assert reset is not None
    grpc.response(200, [], 0.1)
    grpc.end(0.2, grpc_status=14)
    reset.response(200, [], 0.1)
    reset.end(0.3, reset_code=8, error="RESET")
    reset.end(0.4, grpc_status=0)  # reported once
    events = []
    while (event := tap.next_event()) is not None:
        events.append(event)
    ends = [e.http.response_end for e in events if e.http.WhichOneof("event") == "response_end"]
    assert len(ends) == 2
    assert ends[0].eos.WhichOneof("end") == "grpc_status_code"
    assert ends[0].eos.grpc_status_code == 14
    assert (ends[1].id.stream, ends[1].eos.reset_error_code) == (3, 8)
    assert events[0].source_meta.labels["tls"] == "no_identity"


def test_taps_are_bounded() -> None:
    hub, _ = _hub()
    taps = Taps(hub, max_taps=2)
    for _ in range(2):
        taps.start(compile_match(_observe()), limit=1, headers=False, wake=_Waker())
    with pytest.raises(TooManyTapsError):
        taps.start(compile_match(_observe()), limit=1, headers=False, wake=_Waker())
