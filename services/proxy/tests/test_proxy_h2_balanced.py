"""Outbound HTTP/2 and gRPC balanced, routed, timed out and retried per stream, on loopback.

A real proxy, real grpcio clients and servers (plus a raw ``h2`` server where the test must
see frames), and one real gRPC server playing the control plane (``Destination`` and
``OutboundPolicies``), driven by the test. The outbound listener's fixed target stands in
for the original destination (a "ClusterIP" nobody listens on, ``127.0.0.77:80``), so calls
only arrive if the proxy resolves them. Every client uses ONE channel (one HTTP/2
connection), so a spread over endpoints can only come from per-stream balancing. Every load
loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import httpx
import pytest
from fake_control_plane import ControlPlane, serve_control_plane
from google.protobuf.duration_pb2 import Duration
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import (
    destination_pb2,
    grpc_route_pb2,
    http_route_pb2,
    outbound_pb2,
)
from gossamer_proxy.app import Proxy
from gossamer_proxy.mesh.ewma import PeakEwma
from gossamer_proxy.outbound.discovery import TargetHandle

StartProxy = Callable[..., Awaitable[Proxy]]
pytestmark = pytest.mark.timeout(120)

CLUSTER_IP = ("127.0.0.77", 80)
TARGET = f"{CLUSTER_IP[0]}:{CLUSTER_IP[1]}"
NS = "emojivoto"
SVC = f"web.{NS}.svc.cluster.local"
AUTHORITY = f"{SVC}:80"
V1 = f"web-v1.{NS}.svc.cluster.local:80"
V2 = f"web-v2.{NS}.svc.cluster.local:80"
METHOD = "/test.Echo/Unary"


# -- a control plane the test drives -----------------------------------------------------


@pytest.fixture
async def control() -> AsyncIterator[ControlPlane]:
    async with serve_control_plane() as running:
        yield running


def seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


def endpoints(*ports: int) -> destination_pb2.Update:
    return destination_pb2.Update(
        add=destination_pb2.WeightedAddrSet(
            addrs=[
                destination_pb2.WeightedAddr(
                    addr=tcp_address_to_proto("127.0.0.1", p),
                    weight=10000,
                    metric_labels={"pod": f"web-{p}"},
                )
                for p in ports
            ]
        )
    )


def profile_route(
    regex: str, *, retryable: bool = False, timeout: float | None = None
) -> destination_pb2.Route:
    message = destination_pb2.Route(
        condition=destination_pb2.RequestMatch(path=destination_pb2.PathMatch(regex=regex)),
        is_retryable=retryable,
        metrics_labels={"route": regex},
    )
    if timeout is not None:
        message.timeout.CopyFrom(seconds(timeout))
    return message


def profile(
    *routes: destination_pb2.Route, ratio: float = 0.2, min_per_second: int = 10
) -> destination_pb2.DestinationProfile:
    return destination_pb2.DestinationProfile(
        fully_qualified_name=SVC,
        routes=list(routes),
        retry_budget=destination_pb2.RetryBudget(
            retry_ratio=ratio, min_retries_per_second=min_per_second, ttl=seconds(10)
        ),
    )


def service_backend(authority: str) -> outbound_pb2.Backend:
    backend = outbound_pb2.Backend(
        queue=outbound_pb2.Queue(capacity=100, failfast_timeout=seconds(3))
    )
    backend.metadata.resource.group = "core"
    backend.metadata.resource.kind = "Service"
    backend.metadata.resource.name = authority.split(".", 1)[0]
    backend.balancer.discovery.dst.path = authority
    backend.balancer.peak_ewma.default_rtt.CopyFrom(seconds(0.03))
    backend.balancer.peak_ewma.decay.CopyFrom(seconds(10))
    return backend


def http_policy(*rules: outbound_pb2.HttpRoute.Rule) -> outbound_pb2.OutboundPolicy:
    """A ``detect`` policy whose HTTP/2 routes are one ``HTTPRoute`` with ``rules``."""
    route = outbound_pb2.HttpRoute(rules=list(rules))
    route.metadata.resource.group = "policy.linkerd.io"
    route.metadata.resource.kind = "HTTPRoute"
    route.metadata.resource.name = "split"
    route.metadata.resource.namespace = NS
    message = outbound_pb2.OutboundPolicy()
    message.metadata.resource.group = "core"
    message.metadata.resource.kind = "Service"
    message.metadata.resource.name = "web"
    detect = message.protocol.detect
    detect.timeout.CopyFrom(seconds(10))
    detect.opaque.routes.add().rules.add().backends.first_available.backends.add().backend.CopyFrom(
        service_backend(AUTHORITY)
    )
    detect.http1.routes.append(route)
    detect.http2.routes.append(route)
    return message


def grpc_policy(
    *weighted: tuple[str, int],
    retry_codes: tuple[str, ...] = (),
    max_retries: int = 0,
    response_timeout: float | None = None,
) -> outbound_pb2.OutboundPolicy:
    """A ``grpc`` policy: one ``GRPCRoute`` for ``test.Echo`` with an optional ``Retry``."""
    message = outbound_pb2.OutboundPolicy()
    message.metadata.resource.group = "core"
    message.metadata.resource.kind = "Service"
    message.metadata.resource.name = "web"
    route = message.protocol.grpc.routes.add()
    route.metadata.resource.group = "gateway.networking.k8s.io"
    route.metadata.resource.kind = "GRPCRoute"
    route.metadata.resource.name = "echo"
    route.metadata.resource.namespace = NS
    rule = route.rules.add()
    rule.matches.append(
        grpc_route_pb2.GrpcRouteMatch(rpc=grpc_route_pb2.GrpcRpcMatch(service="test.Echo"))
    )
    for authority, weight in weighted:
        entry = rule.backends.random_available.backends.add(weight=weight)
        entry.backend.backend.CopyFrom(service_backend(authority))
    if retry_codes:
        rule.retry.max_retries = max_retries
        for code in retry_codes:
            setattr(rule.retry.conditions, code, True)
    if response_timeout is not None:
        rule.timeouts.response.CopyFrom(seconds(response_timeout))
    return message


def http_rule(
    *weighted: tuple[str, int], path_prefix: str = "/", timeout: float | None = None
) -> outbound_pb2.HttpRoute.Rule:
    message = outbound_pb2.HttpRoute.Rule()
    match = http_route_pb2.HttpRouteMatch()
    match.path.prefix = path_prefix
    message.matches.append(match)
    for authority, weight in weighted:
        entry = message.backends.random_available.backends.add(weight=weight)
        entry.backend.backend.CopyFrom(service_backend(authority))
    if timeout is not None:
        message.timeouts.request.CopyFrom(seconds(timeout))
    return message


# -- gRPC backends -----------------------------------------------------------------------

Behaviour = Callable[[bytes, Any, int], Awaitable[bytes]]


async def echo(request: bytes, context: Any, n: int) -> bytes:
    return b"echo:" + request[:16]


@dataclass
class GrpcBackend:
    port: int
    hits: list[bytes] = field(default_factory=list)
    peers: set[str] = field(default_factory=set)
    cancelled: list[bytes] = field(default_factory=list)


@pytest.fixture
async def grpc_backends() -> AsyncIterator[Callable[[Behaviour], Awaitable[GrpcBackend]]]:
    """Start grpcio servers whose ``behaviour(request, context, n)`` answers each call."""
    servers: list[grpc.aio.Server] = []

    async def start(behaviour: Behaviour = echo) -> GrpcBackend:
        server = grpc.aio.server()
        backend = GrpcBackend(0)

        async def unary(request: bytes, context: Any) -> bytes:
            backend.hits.append(request)
            backend.peers.add(context.peer())
            try:
                return await behaviour(request, context, len(backend.hits))
            except asyncio.CancelledError:
                backend.cancelled.append(request)
                raise

        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "test.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(unary)}
                )
            ]
        )
        backend.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return backend

    yield start
    for server in servers:
        await server.stop(0)


async def proxy_for(start_proxy: StartProxy, control: ControlPlane, policy: bool = False) -> Proxy:
    env = {
        "LINKERD2_PROXY_DESTINATION_SVC_ADDR": f"127.0.0.1:{control.port}",
        "LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS": "127.0.0.0/8",
        "LINKERD2_PROXY_IDENTITY_DISABLED": "true",
    }
    if policy:
        env["LINKERD2_PROXY_POLICY_SVC_ADDR"] = f"127.0.0.1:{control.port}"
        env["LINKERD2_PROXY_POLICY_WORKLOAD"] = '{"ns":"emojivoto","pod":"vote-bot-0"}'
    return await start_proxy(CLUSTER_IP, **env)


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str = ""
    trailers: dict[str, str] = field(default_factory=dict)


async def call_all(
    proxy: Proxy, requests: list[bytes], *, concurrency: int = 8, method: str = METHOD
) -> list[Outcome]:
    """Send ``requests`` as unary calls over ONE channel (one HTTP/2 connection)."""
    addr = proxy.outbound_addr
    results: list[Outcome] = []
    async with grpc.aio.insecure_channel(f"{addr.host}:{addr.port}") as channel:
        stub = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        queue = list(reversed(requests))

        async def worker() -> None:
            while queue:
                call = stub(queue.pop(), timeout=30)
                try:
                    await call
                    results.append(Outcome(grpc.StatusCode.OK))
                except grpc.aio.AioRpcError as exc:
                    trailing: Any = exc.trailing_metadata() or ()
                    meta = {k: v for k, v in trailing if isinstance(v, str)}
                    results.append(Outcome(exc.code(), exc.details() or "", meta))

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), 100)
    return results


def metric(proxy: Proxy, name: str, **labels: str) -> float:
    total = 0.0
    for line in proxy.metrics.registry.render().decode().splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def wait_until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


def codes(results: list[Outcome]) -> dict[grpc.StatusCode, int]:
    counted: dict[grpc.StatusCode, int] = defaultdict(int)
    for result in results:
        counted[result.code] += 1
    return dict(counted)


# -- balancing ---------------------------------------------------------------------------


async def test_calls_on_one_connection_are_spread_over_both_endpoints(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    """Balancing is per stream: while one endpoint holds a stream, the next goes elsewhere.

    Each endpoint holds its first call until both have one. Balancing per connection (or
    not at all) would send every stream of the one client connection to the first endpoint,
    whose held call would then never be released. No share of calls is asserted: latency
    (so the share) is the machine's, not the proxy's.
    """
    both_called = asyncio.Event()
    pair: list[GrpcBackend] = []

    async def hold_the_first(request: bytes, context: Any, n: int) -> bytes:
        if all(backend.hits for backend in pair):
            both_called.set()
        if n == 1:
            await asyncio.wait_for(both_called.wait(), 30)
        return await echo(request, context, n)

    a, b = await grpc_backends(hold_the_first), await grpc_backends(hold_the_first)
    pair += [a, b]
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{AUTHORITY}", endpoints(a.port, b.port))
    proxy = await proxy_for(start_proxy, control)

    results = await call_all(proxy, [b"x%d" % i for i in range(200)])

    assert codes(results) == {grpc.StatusCode.OK: 200}
    assert both_called.is_set()
    assert len(a.hits) + len(b.hits) == 200
    # Streams are multiplexed over one pooled connection per endpoint, not one per call.
    assert len(a.peers) == 1
    assert len(b.peers) == 1
    # Each call was counted once, under the endpoint that took it.
    for backend in (a, b):
        counted = metric(proxy, "request_total", target_addr=f"127.0.0.1:{backend.port}")
        assert counted == len(backend.hits)


async def test_every_stream_feeds_its_latency_to_the_endpoint_that_served_it(
    start_proxy: StartProxy,
    control: ControlPlane,
    grpc_backends: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each stream gives the peak-EWMA of the endpoint that took it one sample: its latency.

    What the balancer then does with the samples (prefer the cheaper endpoint) is checked
    with injected time in test_mesh_ewma_balancer.py, and end to end, with a margin that a
    busy machine keeps, in tests/e2e/test_mesh_balancing.py. Here only lower bounds of time
    are asserted: a stream the slow endpoint served took at least its 50 ms sleep.
    """
    samples: dict[int, list[float]] = defaultdict(list)
    unwrapped = PeakEwma.finish

    def recorded(load: PeakEwma, rtt: float, now: float) -> None:
        samples[id(load)].append(rtt)
        unwrapped(load, rtt, now)

    monkeypatch.setattr(PeakEwma, "finish", recorded)

    async def slow(request: bytes, context: Any, n: int) -> bytes:
        await asyncio.sleep(0.05)
        return b"slow"

    fast, tardy = await grpc_backends(), await grpc_backends(slow)
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{AUTHORITY}", endpoints(tardy.port))
    proxy = await proxy_for(start_proxy, control)
    # The slow endpoint alone first, so it serves at least one stream whatever P2C picks.
    assert codes(await call_all(proxy, [b"x"], concurrency=1)) == {grpc.StatusCode.OK: 1}
    assert proxy.discovery is not None
    balancer = proxy.discovery.backends()[AUTHORITY].balancer
    control.plane.send(f"get:{AUTHORITY}", endpoints(fast.port))
    await wait_until(lambda: len(balancer.slots()) == 2)

    results = await call_all(proxy, [b"x"] * 99, concurrency=4)

    assert codes(results) == {grpc.StatusCode.OK: 99}
    by_port = {slot.key[1]: samples[id(slot.load)] for slot in balancer.slots()}
    assert len(by_port[fast.port]) == len(fast.hits)
    assert len(by_port[tardy.port]) == len(tardy.hits)
    assert len(fast.hits) + len(tardy.hits) == 100
    assert all(rtt >= 0.05 - 1e-3 for rtt in by_port[tardy.port]), by_port[tardy.port]


async def test_unknown_profile_endpoint_refused_connects_are_redispatched(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    """A dead endpoint costs no call: its connects fail and each stream picks again."""
    live = await grpc_backends()
    with contextlib.closing(__import__("socket").socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{AUTHORITY}", endpoints(live.port, dead))
    proxy = await proxy_for(start_proxy, control)

    results = await call_all(proxy, [b"x"] * 40, concurrency=4)

    assert codes(results) == {grpc.StatusCode.OK: 40}
    assert len(live.hits) == 40


# -- retries -----------------------------------------------------------------------------


async def test_retryable_route_hides_a_flaky_endpoint_within_the_budget(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    rng = random.Random(7)

    async def flaky(request: bytes, context: Any, n: int) -> bytes:
        if rng.random() < 0.3:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "flaky")
        return b"ok"

    backend = await grpc_backends(flaky)
    control.plane.send(f"profile:{TARGET}", profile(profile_route(".*", retryable=True)))
    control.plane.send(f"get:{AUTHORITY}", endpoints(backend.port))
    proxy = await proxy_for(start_proxy, control)

    results = await call_all(proxy, [b"x"] * 200)

    ok = codes(results).get(grpc.StatusCode.OK, 0)
    assert ok >= 198, codes(results)
    retries = len(backend.hits) - 200
    assert retries > 30  # ~30% of calls needed at least one more attempt
    # The budget allows 20% of requests plus 10/s over the 10 s TTL.
    assert retries <= 0.2 * 200 + 100
    labels = {"rt_route": ".*"}
    assert metric(proxy, "route_request_total", **labels) == 200
    assert metric(proxy, "route_actual_request_total", **labels) == len(backend.hits)


async def test_retry_budget_caps_retries_of_a_failing_endpoint(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    async def broken(request: bytes, context: Any, n: int) -> bytes:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "always down")
        return b""

    backend = await grpc_backends(broken)
    control.plane.send(
        f"profile:{TARGET}",
        profile(profile_route(".*", retryable=True), ratio=0.2, min_per_second=1),
    )
    control.plane.send(f"get:{AUTHORITY}", endpoints(backend.port))
    proxy = await proxy_for(start_proxy, control)

    results = await call_all(proxy, [b"x"] * 150, concurrency=4)

    # Every call fails with the endpoint's own answer (not a proxy error)...
    assert codes(results) == {grpc.StatusCode.UNAVAILABLE: 150}
    assert {r.details for r in results} == {"always down"}
    # ...after at most the budget's retries: 20% of 150 plus 1/s over the 10 s TTL.
    retries = len(backend.hits) - 150
    assert 10 <= retries <= 0.2 * 150 + 10 + 1, retries


async def test_large_request_bodies_are_not_retried_and_arrive_intact(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    seen: set[bytes] = set()

    async def first_attempt_fails(request: bytes, context: Any, n: int) -> bytes:
        digest = hashlib.sha256(request).digest()
        if digest not in seen:
            seen.add(digest)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "first attempt fails")
        return hashlib.sha256(request).hexdigest().encode()

    backend = await grpc_backends(first_attempt_fails)
    control.plane.send(f"profile:{TARGET}", profile(profile_route(".*", retryable=True)))
    control.plane.send(f"get:{AUTHORITY}", endpoints(backend.port))
    proxy = await proxy_for(start_proxy, control)
    small = b"s" * 1000
    large = bytes(random.Random(1).randbytes(300 * 1024))

    small_result, large_result = (
        await call_all(proxy, [small], concurrency=1),
        await call_all(proxy, [large], concurrency=1),
    )

    assert small_result[0].code is grpc.StatusCode.OK  # replayed from the 1 KB copy
    assert backend.hits[:2] == [small, small]
    assert large_result[0].code is grpc.StatusCode.UNAVAILABLE
    assert large_result[0].details == "first attempt fails"
    assert backend.hits[2:] == [large]  # one attempt, every byte of it


async def test_non_retryable_route_failure_passes_through_untouched(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    async def quota(request: bytes, context: Any, n: int) -> bytes:
        context.set_trailing_metadata((("x-why", "quota"),))
        await context.abort(grpc.StatusCode.UNAVAILABLE, "quota gone")
        return b""

    backend = await grpc_backends(quota)
    control.plane.send(f"profile:{TARGET}", profile(profile_route(".*", retryable=False)))
    control.plane.send(f"get:{AUTHORITY}", endpoints(backend.port))
    proxy = await proxy_for(start_proxy, control)

    results = await call_all(proxy, [b"x"] * 5, concurrency=1)

    assert [(r.code, r.details, r.trailers.get("x-why")) for r in results] == [
        (grpc.StatusCode.UNAVAILABLE, "quota gone", "quota")
    ] * 5
    assert len(backend.hits) == 5
    assert all("l5d-proxy-error" not in r.trailers for r in results)


async def test_grpc_route_retry_retries_listed_codes_up_to_max_retries(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    attempts: dict[bytes, int] = defaultdict(int)

    async def fails_twice(request: bytes, context: Any, n: int) -> bytes:
        attempts[request] += 1
        if attempts[request] <= 2:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"attempt {attempts[request]}")
        if request.startswith(b"internal"):
            await context.abort(grpc.StatusCode.INTERNAL, "not listed")
        return b"ok"

    backend = await grpc_backends(fails_twice)
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(backend.port))
    control.plane.send(
        f"policy:{TARGET}", grpc_policy((V1, 1), retry_codes=("unavailable",), max_retries=2)
    )
    proxy = await proxy_for(start_proxy, control, policy=True)

    results = await call_all(proxy, [b"call%d" % i for i in range(20)], concurrency=4)
    internal = await call_all(proxy, [b"internal"], concurrency=1)

    assert codes(results) == {grpc.StatusCode.OK: 20}  # two failures, two retries each
    assert all(attempts[b"call%d" % i] == 3 for i in range(20))
    # INTERNAL is not a listed condition: the third attempt's answer passes through.
    assert (internal[0].code, internal[0].details) == (grpc.StatusCode.INTERNAL, "not listed")
    assert attempts[b"internal"] == 3


async def test_grpc_route_retry_stops_at_max_retries(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    async def down(request: bytes, context: Any, n: int) -> bytes:
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"attempt {n}")
        return b""

    backend = await grpc_backends(down)
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(backend.port))
    control.plane.send(
        f"policy:{TARGET}", grpc_policy((V1, 1), retry_codes=("unavailable",), max_retries=1)
    )
    proxy = await proxy_for(start_proxy, control, policy=True)

    results = await call_all(proxy, [b"x"], concurrency=1)

    assert (results[0].code, results[0].details) == (grpc.StatusCode.UNAVAILABLE, "attempt 2")
    assert len(backend.hits) == 2


async def test_grpc_route_response_timeout_bounds_each_attempt_and_retries(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    async def first_stuck(request: bytes, context: Any, n: int) -> bytes:
        if n == 1:
            await asyncio.sleep(30)
        return b"second attempt"

    backend = await grpc_backends(first_stuck)
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(backend.port))
    # The retry must answer within the per-attempt timeout: 2 s, which a busy machine keeps.
    control.plane.send(
        f"policy:{TARGET}",
        grpc_policy((V1, 1), retry_codes=("unavailable",), max_retries=1, response_timeout=2.0),
    )
    proxy = await proxy_for(start_proxy, control, policy=True)

    results = await call_all(proxy, [b"x"], concurrency=1)

    assert results[0].code is grpc.StatusCode.OK
    assert len(backend.hits) == 2
    await wait_until(lambda: backend.cancelled == [b"x"])  # the stuck attempt was reset


# -- timeouts ----------------------------------------------------------------------------


async def test_route_timeout_gives_deadline_exceeded_and_cancels_the_upstream_call(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    async def stuck(request: bytes, context: Any, n: int) -> bytes:
        await asyncio.sleep(30)
        return b"too late"

    backend = await grpc_backends(stuck)
    control.plane.send(f"profile:{TARGET}", profile(profile_route(".*", timeout=0.3)))
    control.plane.send(f"get:{AUTHORITY}", endpoints(backend.port))
    proxy = await proxy_for(start_proxy, control)

    results = await call_all(proxy, [b"a", b"b"], concurrency=2)

    assert [r.code for r in results] == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2
    assert all("response timed out" in r.details for r in results)
    # The upstream streams were reset (RST_STREAM CANCEL), which cancels the handlers.
    await wait_until(lambda: sorted(backend.cancelled) == [b"a", b"b"])


@dataclass
class RawH2Server:
    """An h2 server that records streams, resets and closes; answers by path.

    ``/ok`` gets a complete 200; ``/headers-only`` a 200 head and then nothing; any other
    path nothing at all.
    """

    port: int = 0
    requests: list[str] = field(default_factory=list)
    resets: list[int] = field(default_factory=list)
    connections: int = 0
    closed: int = 0


@pytest.fixture
async def raw_h2() -> AsyncIterator[RawH2Server]:
    state = RawH2Server()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        path = dict(event.headers)[b":path"].decode()
                        state.requests.append(path)
                        if path in ("/ok", "/headers-only"):
                            conn.send_headers(
                                event.stream_id, [(":status", "200")], end_stream=path == "/ok"
                            )
                    elif isinstance(event, h2.events.StreamReset):
                        state.resets.append(event.error_code)
                writer.write(conn.data_to_send())
        except ConnectionError:
            pass
        finally:
            state.closed += 1
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    yield state
    server.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), 2)


async def test_policy_timeout_gives_504_to_plain_http2_and_resets_the_upstream_stream(
    start_proxy: StartProxy, control: ControlPlane, raw_h2: RawH2Server
) -> None:
    silent_h2 = raw_h2
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(silent_h2.port))
    control.plane.send(f"policy:{TARGET}", http_policy(http_rule((V1, 1), timeout=0.3)))
    proxy = await proxy_for(start_proxy, control, policy=True)
    addr = proxy.outbound_addr

    async with httpx.AsyncClient(http1=False, http2=True, timeout=15) as client:
        response = await client.get(f"http://{addr.host}:{addr.port}/slow")

    assert response.status_code == 504
    assert response.headers["l5d-proxy-error"] == "response timed out"
    assert silent_h2.requests == ["/slow"]
    await wait_until(lambda: silent_h2.resets == [h2.errors.ErrorCodes.CANCEL])


async def test_timeout_after_the_response_started_resets_the_client_stream(
    start_proxy: StartProxy, control: ControlPlane, raw_h2: RawH2Server
) -> None:
    control.plane.send(f"profile:{TARGET}", profile(profile_route(".*", timeout=0.3)))
    control.plane.send(f"get:{AUTHORITY}", endpoints(raw_h2.port))
    proxy = await proxy_for(start_proxy, control)
    addr = proxy.outbound_addr

    url = f"http://{addr.host}:{addr.port}/headers-only"
    async with (
        httpx.AsyncClient(http1=False, http2=True, timeout=15) as client,
        client.stream("GET", url) as resp,
    ):
        assert resp.status_code == 200
        # A body cut short must not look complete: the stream is reset, not ended.
        with pytest.raises(httpx.RemoteProtocolError):
            await resp.aread()

    await wait_until(lambda: raw_h2.resets == [h2.errors.ErrorCodes.CANCEL])


async def test_client_cancel_resets_upstream_and_finishes_the_pick(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    async def stuck(request: bytes, context: Any, n: int) -> bytes:
        await asyncio.sleep(30)
        return b""

    backend = await grpc_backends(stuck)
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{AUTHORITY}", endpoints(backend.port))
    proxy = await proxy_for(start_proxy, control)
    addr = proxy.outbound_addr

    async with grpc.aio.insecure_channel(f"{addr.host}:{addr.port}") as channel:
        unary = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        call = unary(b"cancel-me")
        await wait_until(lambda: backend.hits == [b"cancel-me"])
        call.cancel()
        await wait_until(lambda: backend.cancelled == [b"cancel-me"])

    assert proxy.discovery is not None
    balancer = proxy.discovery.backends()[AUTHORITY].balancer
    await wait_until(lambda: all(slot.load.pending == 0 for slot in balancer.slots()))


async def test_closing_the_client_connection_closes_its_upstream_connections(
    start_proxy: StartProxy, control: ControlPlane, raw_h2: RawH2Server
) -> None:
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{AUTHORITY}", endpoints(raw_h2.port))
    proxy = await proxy_for(start_proxy, control)
    addr = proxy.outbound_addr

    async with httpx.AsyncClient(http1=False, http2=True, timeout=15) as client:
        for _ in range(3):
            response = await client.get(f"http://{addr.host}:{addr.port}/ok")
            assert response.status_code == 200
        assert raw_h2.connections == 1  # the three streams shared one upstream connection
        assert raw_h2.closed == 0

    await wait_until(lambda: raw_h2.closed == 1)


async def test_a_failing_codec_release_still_closes_the_upstream_connections(
    start_proxy: StartProxy,
    control: ControlPlane,
    raw_h2: RawH2Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def renamed_internal(conn: object) -> None:
        raise AttributeError("'H2Connection' object has no attribute '_frame_dispatch_table'")

    monkeypatch.setattr("gossamer_proxy.http2.bridge.release", renamed_internal)
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{AUTHORITY}", endpoints(raw_h2.port))
    proxy = await proxy_for(start_proxy, control)
    addr = proxy.outbound_addr

    async with httpx.AsyncClient(http1=False, http2=True, timeout=15) as client:
        response = await client.get(f"http://{addr.host}:{addr.port}/ok")
        assert response.status_code == 200
        assert raw_h2.closed == 0

    await wait_until(lambda: raw_h2.closed == 1)


# -- policy routing ----------------------------------------------------------------------


async def test_httproute_split_90_10_per_stream(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    v1, v2 = await grpc_backends(), await grpc_backends()
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(v1.port))
    control.plane.send(f"get:{V2}", endpoints(v2.port))
    control.plane.send(f"policy:{TARGET}", http_policy(http_rule((V1, 90), (V2, 10))))
    proxy = await proxy_for(start_proxy, control, policy=True)

    results = await call_all(proxy, [b"x"] * 2000, concurrency=16)

    assert codes(results) == {grpc.StatusCode.OK: 2000}
    assert len(v1.hits) + len(v2.hits) == 2000
    assert 0.07 <= len(v2.hits) / 2000 <= 0.13, len(v2.hits)


async def test_first_burst_of_streams_all_wait_for_the_policy(
    start_proxy: StartProxy,
    control: ControlPlane,
    grpc_backends: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Streams opened together before the policy is known are all routed by it once it is.

    The policy is sent only once all 16 streams are inside ``TargetHandle.policy()``, so
    none can have been routed before the policy existed, however slow the machine.
    """
    waiting = 0
    unwrapped = TargetHandle.policy

    async def counted(handle: TargetHandle) -> Any:
        nonlocal waiting
        waiting += 1
        try:
            return await unwrapped(handle)
        finally:
            waiting -= 1

    monkeypatch.setattr(TargetHandle, "policy", counted)
    v1 = await grpc_backends()
    control.plane.send(f"profile:{TARGET}", profile())  # the service itself has no endpoints
    control.plane.send(f"get:{V1}", endpoints(v1.port))
    proxy = await proxy_for(start_proxy, control, policy=True)

    calls = asyncio.ensure_future(call_all(proxy, [b"x"] * 16, concurrency=16))
    await wait_until(lambda: waiting == 16 or calls.done())
    assert waiting == 16, calls.result()
    assert v1.hits == []
    control.plane.send(f"policy:{TARGET}", http_policy(http_rule((V1, 1))))
    results = await calls

    assert codes(results) == {grpc.StatusCode.OK: 16}
    assert len(v1.hits) == 16


async def test_unmatched_grpc_call_gets_not_found_from_the_proxy(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    v1 = await grpc_backends()
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(v1.port))
    control.plane.send(
        f"policy:{TARGET}", http_policy(http_rule((V1, 1), path_prefix="/other.Service"))
    )
    proxy = await proxy_for(start_proxy, control, policy=True)

    results = await call_all(proxy, [b"x"], concurrency=1)

    assert results[0].code is grpc.StatusCode.NOT_FOUND
    assert "no route found" in results[0].details
    assert v1.hits == []


# -- route filters, dst labels and l5d directives ------------------------------------------


def grpc_rule(message: outbound_pb2.OutboundPolicy) -> Any:
    """The one rule of :func:`grpc_policy`'s ``GRPCRoute``, to add filters or settings to."""
    return message.protocol.grpc.routes[0].rules[0]


def recording(seen: list[dict[str, str]], behaviour: Behaviour = echo) -> Behaviour:
    """A behaviour that records each call's request metadata, then does ``behaviour``."""

    async def record(request: bytes, context: Any, n: int) -> bytes:
        seen.append({m.key: m.value for m in context.invocation_metadata()})
        return await behaviour(request, context, n)

    return record


async def call_with(
    proxy: Proxy, metadata: tuple[tuple[str, str], ...], request: bytes = b"x"
) -> Outcome:
    """One unary call through the proxy with ``metadata`` (request headers)."""
    addr = proxy.outbound_addr
    async with grpc.aio.insecure_channel(f"{addr.host}:{addr.port}") as channel:
        unary = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        try:
            await unary(request, metadata=metadata, timeout=30)
        except grpc.aio.AioRpcError as exc:
            return Outcome(exc.code(), exc.details() or "")
        return Outcome(grpc.StatusCode.OK)


async def test_grpc_request_header_modifier_reaches_the_server(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    seen: list[dict[str, str]] = []
    backend = await grpc_backends(recording(seen))
    policy = grpc_policy((V1, 1))
    modifier = grpc_rule(policy).filters.add().request_header_modifier
    modifier.set.headers.add(name="x-canary", value=b"yes")
    modifier.add.headers.add(name="x-added", value=b"1")
    modifier.remove.append("x-secret")
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(backend.port))
    control.plane.send(f"policy:{TARGET}", policy)
    proxy = await proxy_for(start_proxy, control, policy=True)

    result = await call_with(proxy, (("x-canary", "no"), ("x-secret", "s3cret")))

    assert result.code is grpc.StatusCode.OK
    assert seen[0]["x-canary"] == "yes"
    assert seen[0]["x-added"] == "1"
    assert "x-secret" not in seen[0]


async def test_grpc_failure_injector_answers_with_its_status_and_counts_it(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    backend = await grpc_backends()
    policy = grpc_policy((V1, 1))
    injector = grpc_rule(policy).filters.add().failure_injector
    injector.code = grpc.StatusCode.UNAVAILABLE.value[0]
    injector.message = "chaos monkey"
    injector.ratio.numerator = 1
    injector.ratio.denominator = 1
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(backend.port))
    control.plane.send(f"policy:{TARGET}", policy)
    proxy = await proxy_for(start_proxy, control, policy=True)

    results = await call_all(proxy, [b"x"] * 5, concurrency=5)

    assert [(r.code, r.details) for r in results] == [
        (grpc.StatusCode.UNAVAILABLE, "chaos monkey")
    ] * 5
    assert backend.hits == []
    assert metric(proxy, "response_total", direction="outbound", grpc_status="14") == 5


async def test_invalid_grpc_filter_answers_internal(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    backend = await grpc_backends()
    policy = grpc_policy((V1, 1))
    injector = grpc_rule(policy).filters.add().failure_injector
    injector.code = 14
    injector.ratio.numerator = 1  # denominator 0: the filter is unusable
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(backend.port))
    control.plane.send(f"policy:{TARGET}", policy)
    proxy = await proxy_for(start_proxy, control, policy=True)

    result = await call_with(proxy, ())

    assert result.code is grpc.StatusCode.INTERNAL
    assert "invalid route filter" in result.details
    assert "denominator" in result.details
    assert backend.hits == []


async def test_redirect_filter_answers_plain_http2_with_a_location(
    start_proxy: StartProxy, control: ControlPlane, raw_h2: RawH2Server
) -> None:
    rule = http_rule((V1, 1), path_prefix="/old")
    redirect = rule.filters.add().redirect
    redirect.status = 301
    redirect.host = "new.example.com"
    redirect.port = 8080
    redirect.path.prefix = "/new"
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(raw_h2.port))
    control.plane.send(f"policy:{TARGET}", http_policy(rule))
    proxy = await proxy_for(start_proxy, control, policy=True)
    addr = proxy.outbound_addr

    async with httpx.AsyncClient(http1=False, http2=True, timeout=15) as client:
        response = await client.get(f"http://{addr.host}:{addr.port}/old/page?q=1")

    assert response.status_code == 301
    assert response.headers["location"] == "http://new.example.com:8080/new/page?q=1"
    assert raw_h2.requests == []
    assert metric(proxy, "response_total", direction="outbound", status_code="301") == 1


async def test_response_header_modifier_rewrites_the_http2_response_head(
    start_proxy: StartProxy, control: ControlPlane, raw_h2: RawH2Server
) -> None:
    rule = http_rule((V1, 1))
    modifier = rule.filters.add().response_header_modifier
    modifier.add.headers.add(name="x-served-by", value=b"gossamer")
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(raw_h2.port))
    control.plane.send(f"policy:{TARGET}", http_policy(rule))
    proxy = await proxy_for(start_proxy, control, policy=True)
    addr = proxy.outbound_addr

    async with httpx.AsyncClient(http1=False, http2=True, timeout=15) as client:
        response = await client.get(f"http://{addr.host}:{addr.port}/ok")

    assert response.status_code == 200
    assert response.headers["x-served-by"] == "gossamer"
    assert raw_h2.requests == ["/ok"]


async def test_http2_outbound_metrics_carry_the_endpoints_dst_labels(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    one, two = await grpc_backends(), await grpc_backends()
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{AUTHORITY}", endpoints(one.port, two.port))
    proxy = await proxy_for(start_proxy, control)

    results = await call_all(proxy, [b"x"] * 40)

    assert codes(results) == {grpc.StatusCode.OK: 40}
    for backend in (one, two):
        labels = {"target_addr": f"127.0.0.1:{backend.port}", "dst_pod": f"web-{backend.port}"}
        assert metric(proxy, "request_total", **labels) == len(backend.hits)
        assert metric(proxy, "response_total", **labels) == len(backend.hits)
    # The exposition the admin server serves carries them too.
    rendered = proxy.metrics.registry.render().decode()
    assert f'dst_pod="web-{one.port}"' in rendered


async def test_l5d_timeout_on_an_allowing_route_gives_deadline_exceeded(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    async def stuck(request: bytes, context: Any, n: int) -> bytes:
        await asyncio.sleep(30)
        return b"too late"

    seen: list[dict[str, str]] = []
    backend = await grpc_backends(recording(seen, stuck))
    policy = grpc_policy((V1, 1))
    grpc_rule(policy).allow_l5d_request_headers = True
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(backend.port))
    control.plane.send(f"policy:{TARGET}", policy)
    proxy = await proxy_for(start_proxy, control, policy=True)

    result = await call_with(proxy, (("l5d-timeout", "300ms"),))

    assert result.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "response timed out" in result.details
    assert "l5d-timeout" not in seen[0]  # consumed, not forwarded
    await wait_until(lambda: backend.cancelled == [b"x"])


async def test_l5d_directives_are_stripped_and_ignored_on_a_route_that_does_not_allow_them(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    async def slow(request: bytes, context: Any, n: int) -> bytes:
        await asyncio.sleep(0.5)
        return b"slow but fine"

    seen: list[dict[str, str]] = []
    backend = await grpc_backends(recording(seen, slow))
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(backend.port))
    control.plane.send(f"policy:{TARGET}", grpc_policy((V1, 1)))
    proxy = await proxy_for(start_proxy, control, policy=True)
    directives = (
        ("l5d-timeout", "50ms"),
        ("l5d-request-timeout", "50ms"),
        ("l5d-response-timeout", "50ms"),
        ("l5d-retry-limit", "3"),
        ("l5d-retry-grpc", "unavailable"),
        ("l5d-retry-http", "5xx"),
        ("l5d-retry-timeout", "50ms"),
        ("x-kept", "1"),
    )

    result = await call_with(proxy, directives)

    assert result.code is grpc.StatusCode.OK  # the 50ms timeouts were not honoured
    assert len(backend.hits) == 1
    assert seen[0]["x-kept"] == "1"
    assert [name for name in seen[0] if name.startswith("l5d-")] == []


async def test_policy_retries_back_off_between_attempts(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    stamps: list[float] = []

    async def flaky_first(request: bytes, context: Any, n: int) -> bytes:
        stamps.append(asyncio.get_running_loop().time())
        if n == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "first attempt")
        return b"second attempt"

    backend = await grpc_backends(flaky_first)
    policy = grpc_policy((V1, 1), retry_codes=("unavailable",), max_retries=1)
    backoff = grpc_rule(policy).retry.backoff
    backoff.min_backoff.CopyFrom(seconds(0.4))
    backoff.max_backoff.CopyFrom(seconds(1))
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(backend.port))
    control.plane.send(f"policy:{TARGET}", policy)
    proxy = await proxy_for(start_proxy, control, policy=True)

    result = await call_with(proxy, ())

    assert result.code is grpc.StatusCode.OK
    assert len(backend.hits) == 2
    # The retry waited out at least the minimum backoff (a lower bound, not a latency claim).
    assert stamps[1] - stamps[0] >= 0.4


async def test_grpc_route_families_count_calls_by_grpc_status(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    async def picky(request: bytes, context: Any, n: int) -> bytes:
        if request == b"missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        return b"ok"

    backend = await grpc_backends(picky)
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(backend.port))
    control.plane.send(f"policy:{TARGET}", grpc_policy((V1, 1)))
    proxy = await proxy_for(start_proxy, control, policy=True)

    results = await call_all(proxy, [b"a", b"b", b"c", b"missing"], concurrency=2)

    assert codes(results) == {grpc.StatusCode.OK: 3, grpc.StatusCode.NOT_FOUND: 1}
    route = {
        "parent_kind": "Service",
        "parent_name": "web",
        "route_group": "gateway.networking.k8s.io",
        "route_kind": "GRPCRoute",
        "route_name": "echo",
    }
    statuses = "outbound_grpc_route_request_statuses_total"
    assert metric(proxy, statuses, **route, grpc_status="OK") == 3
    assert metric(proxy, statuses, **route, grpc_status="NOT_FOUND") == 1
    assert metric(proxy, "outbound_grpc_route_backend_requests_total", **route) == 4
    backend_statuses = "outbound_grpc_route_backend_response_statuses_total"
    assert metric(proxy, backend_statuses, **route, backend_name="web-v1", grpc_status="OK") == 3
    assert metric(proxy, "outbound_http_route_request_statuses_total") == 0


async def test_streams_without_httproutes_count_on_the_default_route(
    start_proxy: StartProxy, control: ControlPlane, grpc_backends: Any
) -> None:
    backend = await grpc_backends()
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{AUTHORITY}", endpoints(backend.port))
    message = http_policy()
    for http in (message.protocol.detect.http1, message.protocol.detect.http2):
        del http.routes[:]
        route = http.routes.add()
        route.metadata.default = "http"
        rule = route.rules.add()
        rule.matches.add().path.prefix = "/"
        rule.backends.first_available.backends.add().backend.CopyFrom(service_backend(AUTHORITY))
    control.plane.send(f"policy:{TARGET}", message)
    proxy = await proxy_for(start_proxy, control, policy=True)

    results = await call_all(proxy, [b"a", b"b", b"c"], concurrency=1)

    assert codes(results) == {grpc.StatusCode.OK: 3}
    default = {"parent_name": "web", "route_kind": "default", "route_name": "http"}
    statuses = "outbound_http_route_request_statuses_total"
    assert metric(proxy, statuses, **default, http_status="200") == 3
    requests = "outbound_http_route_backend_requests_total"
    assert metric(proxy, requests, **default, backend_name="web") == 3
