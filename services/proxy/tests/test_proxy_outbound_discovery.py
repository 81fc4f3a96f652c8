"""Outbound discovery end to end on loopback: real proxies, real backends, a real gRPC
Destination servicer that the test drives.

The proxy's outbound listener treats ``GOSSAMER_PROXY_OUTBOUND_FIXED_TARGET`` as the
original destination (loopback tests have no iptables), so a "ClusterIP" is a loopback
address nobody listens on (``127.0.0.77:80``): traffic only works if the proxy resolves it
through ``GetProfile`` + ``Get`` to the backends' real ports. Every load loop is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from fake_control_plane import ControlPlane, FakeDestination, Plane, serve_control_plane
from google.protobuf.duration_pb2 import Duration
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import destination_pb2, destination_pb2_grpc
from gossamer_proxy.app import Proxy
from gossamer_proxy.mesh.accrual import DEFAULT_MAX_FAILURES, AccrualState

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]

CLUSTER_IP = ("127.0.0.77", 80)
SVC = "web.emojivoto.svc.cluster.local"
AUTHORITY = f"{SVC}:80"


# -- a Destination service the test drives -------------------------------------------------


@pytest.fixture
async def control() -> AsyncIterator[ControlPlane]:
    async with serve_control_plane(policies=False) as running:
        yield running


def weighted(port: int, **extra: Any) -> destination_pb2.WeightedAddr:
    return destination_pb2.WeightedAddr(
        addr=tcp_address_to_proto("127.0.0.1", port),
        weight=10000,
        metric_labels={"pod": f"web-{port}"},
        **extra,
    )


def add(*ports: int) -> destination_pb2.Update:
    return destination_pb2.Update(
        add=destination_pb2.WeightedAddrSet(
            addrs=[weighted(p) for p in ports],
            metric_labels={"service": "web", "namespace": "emojivoto"},
        )
    )


def remove(*ports: int) -> destination_pb2.Update:
    return destination_pb2.Update(
        remove=destination_pb2.AddrSet(addrs=[tcp_address_to_proto("127.0.0.1", p) for p in ports])
    )


def route(regex: str, *, retryable: bool = False, timeout_ms: int = 0) -> destination_pb2.Route:
    message = destination_pb2.Route(
        condition=destination_pb2.RequestMatch(path=destination_pb2.PathMatch(regex=regex)),
        is_retryable=retryable,
        metrics_labels={"route": regex},
    )
    if timeout_ms:
        message.timeout.CopyFrom(Duration(nanos=timeout_ms * 1_000_000))
    return message


def profile(
    name: str = SVC,
    *,
    routes: tuple[destination_pb2.Route, ...] = (),
    overrides: tuple[tuple[str, int], ...] = (),
) -> destination_pb2.DestinationProfile:
    return destination_pb2.DestinationProfile(
        fully_qualified_name=name,
        routes=list(routes),
        retry_budget=destination_pb2.RetryBudget(
            retry_ratio=0.2, min_retries_per_second=10, ttl=Duration(seconds=10)
        ),
        dst_overrides=[destination_pb2.WeightedDst(authority=a, weight=w) for a, w in overrides],
    )


# -- backends ----------------------------------------------------------------------------


@dataclass
class Backend:
    port: int
    hits: list[str]


Behaviour = Callable[[str, bytes, int], Awaitable[tuple[int, bytes]]]


async def ok(path: str, body: bytes, count: int) -> tuple[int, bytes]:
    return 200, b"ok"


async def http_backend(tcp_server: TcpServer, behaviour: Behaviour = ok) -> Backend:
    """An HTTP/1.1 keep-alive server; ``behaviour(path, body, n)`` decides each answer."""
    hits: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                path = head.split(" ", 2)[1]
                length = 0
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                hits.append(path)
                status, answer = await behaviour(path, body, len(hits))
                writer.write(
                    b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s" % (status, len(answer), answer)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    _, port = await tcp_server(handle)
    return Backend(port, hits)


async def discovery_proxy(start_proxy: StartProxy, control: ControlPlane, **env: str) -> Proxy:
    return await start_proxy(
        CLUSTER_IP,
        LINKERD2_PROXY_DESTINATION_SVC_ADDR=control.addr,
        LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS="127.0.0.0/8",
        LINKERD2_PROXY_IDENTITY_DISABLED="true",
        **env,
    )


class Client:
    """One keep-alive client connection to the proxy's outbound listener."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, proxy: Proxy) -> Client:
        addr = proxy.outbound_addr
        return cls(*await asyncio.open_connection(addr.host, addr.port))

    async def request(
        self, path: str = "/", *, method: str = "GET", body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: {AUTHORITY}\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        return await asyncio.wait_for(read_response(self.reader), 15)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split(" ")[1]), headers, body


async def run_requests(
    proxy: Proxy, count: int, *, clients: int = 4, path: str = "/"
) -> Counter[int]:
    """``count`` requests spread over ``clients`` concurrent keep-alive connections."""
    statuses: Counter[int] = Counter()

    async def worker(n: int) -> None:
        client = await Client.open(proxy)
        try:
            for _ in range(n):
                status, _, _ = await client.request(path)
                statuses[status] += 1
        finally:
            await client.close()

    share = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
    await asyncio.wait_for(asyncio.gather(*(worker(n) for n in share if n)), 120)
    return statuses


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


def serve_service(control: ControlPlane, *ports: int) -> None:
    control.plane.send(f"profile:{CLUSTER_IP[0]}:{CLUSTER_IP[1]}", profile())
    control.plane.send(f"get:{AUTHORITY}", add(*ports))


# -- tests -------------------------------------------------------------------------------


async def test_cluster_ip_is_resolved_and_two_backends_share_the_load(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    """Each endpoint holds its first request until both have one: the balancer must send
    the next request elsewhere while one is busy (no share is asserted: it follows the
    machine's latency)."""
    both_called = asyncio.Event()
    pair: list[Backend] = []

    async def hold_the_first(path: str, body: bytes, n: int) -> tuple[int, bytes]:
        if all(backend.hits for backend in pair):
            both_called.set()
        if n == 1:
            await asyncio.wait_for(both_called.wait(), 30)
        return await ok(path, body, n)

    a, b = (
        await http_backend(tcp_server, hold_the_first),
        await http_backend(tcp_server, hold_the_first),
    )
    pair += [a, b]
    serve_service(control, a.port, b.port)
    proxy = await discovery_proxy(start_proxy, control)

    statuses = await run_requests(proxy, 200)

    assert statuses == {200: 200}
    assert both_called.is_set()
    assert len(a.hits) + len(b.hits) == 200
    assert ("profile", "127.0.0.77:80") in control.plane.requests
    assert ("get", AUTHORITY) in control.plane.requests
    # Metrics name the endpoint and its TLS state (no identity: plaintext by discovery).
    assert (
        metric(proxy, "request_total", target_addr=f"127.0.0.1:{a.port}", direction="outbound") > 0
    )
    assert metric(proxy, "response_total", authority=AUTHORITY, status_code="200") == 200


async def test_endpoint_updates_reach_the_balancer(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    a, b = await http_backend(tcp_server), await http_backend(tcp_server)
    serve_service(control, a.port)
    proxy = await discovery_proxy(start_proxy, control)
    client = await Client.open(proxy)
    try:
        for _ in range(20):
            assert (await client.request())[0] == 200
        assert (len(a.hits), len(b.hits)) == (20, 0)

        control.plane.send(f"get:{AUTHORITY}", add(b.port))
        control.plane.send(f"get:{AUTHORITY}", remove(a.port))
        assert proxy.discovery is not None
        backend = proxy.discovery.backends()[AUTHORITY]
        await wait_until(lambda: backend.counts() == (1, 0) and not backend.balancer.ejected())
        await wait_until(lambda: [s.meta.port for s in backend.balancer.slots()] == [b.port])
        for _ in range(20):
            assert (await client.request())[0] == 200
        assert (len(a.hits), len(b.hits)) == (20, 20)
        proxy._housekeeping()  # refresh the gauges now rather than on the next tick
        assert (
            metric(
                proxy,
                "outbound_http_balancer_endpoints",
                endpoint_state="ready",
                parent_kind="Service",
                parent_name="web",
                parent_namespace="emojivoto",
                parent_port="80",
                backend_group="core",
                backend_kind="Service",
                backend_name="web",
                backend_namespace="emojivoto",
                backend_port="80",
            )
            == 1
        )
    finally:
        await client.close()


async def test_slow_backend_gets_less_traffic(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    async def slow(path: str, body: bytes, n: int) -> tuple[int, bytes]:
        await asyncio.sleep(0.05)
        return 200, b"slow"

    fast_backend = await http_backend(tcp_server)
    slow_backend = await http_backend(tcp_server, slow)
    serve_service(control, fast_backend.port, slow_backend.port)
    proxy = await discovery_proxy(start_proxy, control)

    statuses = await run_requests(proxy, 300, clients=6)

    assert statuses == {200: 300}
    assert len(slow_backend.hits) < len(fast_backend.hits) / 3


async def test_retryable_route_retries_failures_within_budget_and_replays_bodies(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    seen_bodies: list[bytes] = []

    async def flaky(path: str, body: bytes, n: int) -> tuple[int, bytes]:
        seen_bodies.append(body)
        return (500, b"boom") if n % 2 == 1 else (200, b"fine:" + body)

    backend = await http_backend(tcp_server, flaky)
    control.plane.send(
        f"profile:{CLUSTER_IP[0]}:{CLUSTER_IP[1]}",
        profile(routes=(route("/retry/.*", retryable=True), route("/once/.*"))),
    )
    control.plane.send(f"get:{AUTHORITY}", add(backend.port))
    proxy = await discovery_proxy(start_proxy, control)
    client = await Client.open(proxy)
    try:
        for i in range(10):
            status, _, answer = await client.request(
                f"/retry/{i}", method="POST", body=b"payload-%d" % i
            )
            assert (status, answer) == (200, b"fine:payload-%d" % i)
        assert len(backend.hits) == 20  # every request failed once and was retried once
        assert seen_bodies[0] == seen_bodies[1] == b"payload-0"
        # A route that is not retryable passes the failure through.
        status, _, answer = await client.request("/once/x")
        assert (status, answer) == (500, b"boom")
        assert len(backend.hits) == 21
        dst = f"{SVC}:80"
        retry_route = {"dst": dst, "rt_route": "/retry/.*"}
        assert metric(proxy, "route_request_total", **retry_route) == 10
        assert metric(proxy, "route_actual_request_total", **retry_route) == 20
        assert metric(proxy, "route_response_total", status_code="200", **retry_route) == 10
        once = {"dst": dst, "rt_route": "/once/.*", "classification": "failure"}
        assert metric(proxy, "route_response_total", status_code="500", **once) == 1
    finally:
        await client.close()


async def test_retry_budget_bounds_retries(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    async def broken(path: str, body: bytes, n: int) -> tuple[int, bytes]:
        return (500, b"down") if path.startswith("/fail") else (200, b"ok")

    backend = await http_backend(tcp_server, broken)
    message = profile(routes=(route("/fail/.*", retryable=True), route("/ok")))
    # No reserve and a 10% ratio: 50 requests earn 5 retries.
    message.retry_budget.min_retries_per_second = 0
    message.retry_budget.retry_ratio = 0.1
    control.plane.send(f"profile:{CLUSTER_IP[0]}:{CLUSTER_IP[1]}", message)
    control.plane.send(f"get:{AUTHORITY}", add(backend.port))
    proxy = await discovery_proxy(start_proxy, control)
    client = await Client.open(proxy)
    try:
        for i in range(50):
            assert (await client.request(f"/fail/{i}"))[0] == 500
            # A success in between keeps failure accrual from ejecting the only endpoint.
            assert (await client.request("/ok"))[0] == 200
    finally:
        await client.close()
    failed = [p for p in backend.hits if p.startswith("/fail")]
    assert 52 <= len(failed) <= 56  # some retries, never more than the budget allows


async def test_route_timeout_answers_504(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    async def slow(path: str, body: bytes, n: int) -> tuple[int, bytes]:
        if path.startswith("/slow"):
            await asyncio.sleep(3)
        return 200, b"ok"

    backend = await http_backend(tcp_server, slow)
    control.plane.send(
        f"profile:{CLUSTER_IP[0]}:{CLUSTER_IP[1]}",
        profile(routes=(route("/slow", timeout_ms=200),)),
    )
    control.plane.send(f"get:{AUTHORITY}", add(backend.port))
    proxy = await discovery_proxy(start_proxy, control)
    client = await Client.open(proxy)
    try:
        status, headers, _ = await client.request("/slow")
        assert status == 504
        assert headers["l5d-proxy-error"] == "response timed out"
    finally:
        await client.close()
    # The connection and the service still work afterwards.
    client = await Client.open(proxy)
    try:
        assert (await client.request("/fast"))[0] == 200
    finally:
        await client.close()


async def test_dst_overrides_split_90_10(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    stable, canary = await http_backend(tcp_server), await http_backend(tcp_server)
    v1, v2 = "web-v1.emojivoto.svc.cluster.local:80", "web-v2.emojivoto.svc.cluster.local:80"
    control.plane.send(
        f"profile:{CLUSTER_IP[0]}:{CLUSTER_IP[1]}",
        profile(overrides=((v1, 9000), (v2, 1000))),
    )
    control.plane.send(f"get:{v1}", add(stable.port))
    control.plane.send(f"get:{v2}", add(canary.port))
    proxy = await discovery_proxy(start_proxy, control)

    statuses = await run_requests(proxy, 2000, clients=8)

    assert statuses == {200: 2000}
    share = len(canary.hits) / 2000
    assert 0.07 <= share <= 0.13, share
    assert ("get", v1) in control.plane.requests
    assert ("get", v2) in control.plane.requests


async def test_control_plane_down_keeps_last_known_endpoints(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    backend = await http_backend(tcp_server)
    serve_service(control, backend.port)
    proxy = await discovery_proxy(start_proxy, control)
    client = await Client.open(proxy)
    try:
        assert (await client.request())[0] == 200
        await control.server.stop(None)
        for _ in range(5):
            assert (await client.request())[0] == 200
        # A new connection to the same service while the control plane is away.
        other = await Client.open(proxy)
        try:
            for _ in range(5):
                assert (await other.request())[0] == 200
        finally:
            await other.close()
    finally:
        await client.close()
    assert len(backend.hits) == 11


async def test_no_endpoints_fail_fast_with_504(
    start_proxy: StartProxy, control: ControlPlane
) -> None:
    control.plane.send(f"profile:{CLUSTER_IP[0]}:{CLUSTER_IP[1]}", profile())
    control.plane.send(
        f"get:{AUTHORITY}",
        destination_pb2.Update(no_endpoints=destination_pb2.NoEndpoints(exists=True)),
    )
    proxy = await discovery_proxy(start_proxy, control)
    client = await Client.open(proxy)
    try:
        status, headers, _ = await client.request()
        assert status == 504
        assert headers["l5d-proxy-error"].startswith("service in fail-fast")
        # In fail-fast, the next request fails at once (same answer).
        assert (await client.request())[0] == 504
    finally:
        await client.close()


async def test_rejected_profile_forwards_to_the_original_destination(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    backend = await http_backend(tcp_server)
    control.plane.send(f"profile:127.0.0.1:{backend.port}", grpc.StatusCode.INVALID_ARGUMENT)
    proxy = await start_proxy(
        ("127.0.0.1", backend.port),
        LINKERD2_PROXY_DESTINATION_SVC_ADDR=control.addr,
        LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS="127.0.0.0/8",
        LINKERD2_PROXY_IDENTITY_DISABLED="true",
    )
    client = await Client.open(proxy)
    try:
        assert (await client.request())[0] == 200
    finally:
        await client.close()
    assert len(backend.hits) == 1


async def test_target_outside_profile_networks_is_forwarded_without_lookup(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    backend = await http_backend(tcp_server)
    proxy = await start_proxy(
        ("127.0.0.1", backend.port),
        LINKERD2_PROXY_DESTINATION_SVC_ADDR=control.addr,
        LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS="10.0.0.0/8",
        LINKERD2_PROXY_IDENTITY_DISABLED="true",
    )
    client = await Client.open(proxy)
    try:
        assert (await client.request())[0] == 200
    finally:
        await client.close()
    assert control.plane.requests == []


def dead_port() -> int:
    """A loopback port nothing listens on: every connect to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_refused_endpoint_is_redispatched_and_backed_off_without_failing_requests(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    """An endpoint gone between discovery and the connect (a rolling update) costs nothing.

    A refused connect puts the endpoint in its reconnect backoff (pending, not picked) and
    the request is re-dispatched to the live endpoint: the client never sees an error.
    Failure accrual, which judges responses, is left alone.
    """
    good = await http_backend(tcp_server)
    dead = dead_port()
    serve_service(control, good.port, dead)
    proxy = await discovery_proxy(start_proxy, control)

    statuses = await run_requests(proxy, 200, clients=4)

    assert statuses == Counter({200: 200})
    assert len(good.hits) == 200
    assert proxy.discovery is not None
    backend = proxy.discovery.backends()[AUTHORITY]
    assert backend.balancer.slot((ipaddress.ip_address("127.0.0.1"), dead)).reconnect.failures
    assert not backend.balancer.slot(
        (ipaddress.ip_address("127.0.0.1"), good.port)
    ).reconnect.failures
    assert backend.balancer.ejected() == []


async def test_request_with_body_is_redispatched_whole(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    """Nothing of the request was sent on a failed connect, so a POST body arrives intact."""
    bodies: list[bytes] = []

    async def echo(path: str, body: bytes, n: int) -> tuple[int, bytes]:
        bodies.append(body)
        return 200, body

    good = await http_backend(tcp_server, echo)
    serve_service(control, good.port, dead_port(), dead_port())
    proxy = await discovery_proxy(start_proxy, control)
    client = await Client.open(proxy)
    try:
        for i in range(30):
            payload = b"payload-%d" % i * 100
            status, _, answer = await client.request("/up", method="POST", body=payload)
            assert (status, answer) == (200, payload)
    finally:
        await client.close()
    assert len(bodies) == 30


async def test_only_dead_endpoints_fail_after_three_connects(
    start_proxy: StartProxy, control: ControlPlane
) -> None:
    """With no live endpoint the client gets the 502 once the three connects are used up."""
    serve_service(control, dead_port(), dead_port(), dead_port(), dead_port())
    proxy = await discovery_proxy(start_proxy, control)
    client = await Client.open(proxy)
    try:
        status, headers, _ = await client.request()
    finally:
        await client.close()
    assert status == 502
    assert headers["l5d-proxy-error"].startswith("connection refused")
    assert proxy.discovery is not None
    backend = proxy.discovery.backends()[AUTHORITY]
    backing_off = [s for s in backend.balancer.slots() if s.reconnect.failures]
    assert len(backing_off) == 3  # one request, three connects, three endpoints backing off
    assert sum(s.accrual.consecutive_failures for s in backend.balancer.slots()) == 0


async def test_endpoint_answering_5xx_is_not_ejected_by_default(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    """Only transport failures eject by default; 5xx answers need the Service to opt in.

    The 500 endpoint is the Service's only one, so it gets every request whatever the
    balancer's latency estimates say: three times the consecutive failures that would
    eject it if accrual counted responses. Each answer is the app's own 500 (an ejected
    endpoint would leave the request to fail fast in the proxy), and after each one its
    accrual has counted nothing.
    """

    async def broken(path: str, body: bytes, n: int) -> tuple[int, bytes]:
        return 500, b"down"

    bad = await http_backend(tcp_server, broken)
    serve_service(control, bad.port)
    proxy = await discovery_proxy(start_proxy, control)
    client = await Client.open(proxy)
    try:
        assert (await client.request())[0] == 500  # the first request creates the backend
        assert proxy.discovery is not None
        backend = proxy.discovery.backends()[AUTHORITY]
        accrual = backend.balancer.slot((ipaddress.ip_address("127.0.0.1"), bad.port)).accrual
        for _ in range(3 * DEFAULT_MAX_FAILURES - 1):
            assert (accrual.state, accrual.consecutive_failures) == (AccrualState.AVAILABLE, 0)
            status, headers, answer = await client.request()
            assert (status, answer) == (500, b"down")
            assert "l5d-proxy-error" not in headers
    finally:
        await client.close()
    assert len(bad.hits) == 3 * DEFAULT_MAX_FAILURES
    assert (accrual.state, accrual.consecutive_failures) == (AccrualState.AVAILABLE, 0)
    assert backend.balancer.ejected() == []


async def test_endpoint_answering_5xx_stays_a_candidate_beside_a_healthy_one(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    """With a healthy sibling, the 5xx endpoint is still offered to every pick.

    How the requests split follows the machine's latency, so no share is asserted: whatever
    reached the 500 endpoint came back as its 500, and both endpoints stay available (a pick
    draws only among available endpoints) with no failure counted against either.
    """

    async def broken(path: str, body: bytes, n: int) -> tuple[int, bytes]:
        return 500, b"down"

    good, bad = await http_backend(tcp_server), await http_backend(tcp_server, broken)
    serve_service(control, good.port, bad.port)
    proxy = await discovery_proxy(start_proxy, control)

    statuses = await run_requests(proxy, 100, clients=2)

    assert statuses == Counter({200: len(good.hits), 500: len(bad.hits)})
    assert proxy.discovery is not None
    backend = proxy.discovery.backends()[AUTHORITY]
    assert backend.balancer.ejected() == []
    assert backend.counts() == (2, 0)
    for slot in backend.balancer.slots():
        assert (slot.accrual.state, slot.accrual.consecutive_failures) == (
            AccrualState.AVAILABLE,
            0,
        )


async def test_opaque_connections_are_balanced_per_connection(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    served: Counter[int] = Counter()

    def echo_on(tag: int) -> Callable[..., Awaitable[None]]:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            served[tag] += 1
            data = await reader.read(100)
            writer.write(b"%d:" % tag + data)
            await writer.drain()
            writer.close()

        return echo

    _, p1 = await tcp_server(echo_on(1))
    _, p2 = await tcp_server(echo_on(2))
    control.plane.send(f"profile:{CLUSTER_IP[0]}:{CLUSTER_IP[1]}", profile())
    control.plane.send(f"get:{AUTHORITY}", add(p1, p2))
    proxy = await discovery_proxy(
        start_proxy, control, GOSSAMER_PROXY_OUTBOUND_PORTS_DISABLE_PROTOCOL_DETECTION="80"
    )
    for i in range(20):
        reader, writer = await asyncio.open_connection(*proxy.outbound_addr)
        writer.write(b"ping%d" % i)
        answer = await asyncio.wait_for(reader.read(100), 10)
        assert answer.endswith(b"ping%d" % i)
        writer.close()
    assert served[1] + served[2] == 20
    assert served[1] > 0
    assert served[2] > 0


async def test_opaque_profile_skips_detection_for_server_first_protocols(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 smtp ready\r\n")  # the server speaks first
        await writer.drain()
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    _, port = await tcp_server(banner)
    message = profile()
    message.opaque_protocol = True
    control.plane.send(f"profile:{CLUSTER_IP[0]}:{CLUSTER_IP[1]}", message)
    control.plane.send(f"get:{AUTHORITY}", add(port))
    # A detect timeout far beyond the test's wait: only skipping detection can pass.
    proxy = await discovery_proxy(
        start_proxy, control, LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT="60s"
    )
    reader, writer = await asyncio.open_connection(*proxy.outbound_addr)
    try:
        assert await asyncio.wait_for(reader.readline(), 5) == b"220 smtp ready\r\n"
        writer.write(b"HELO x\r\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"HELO x\r\n"
    finally:
        writer.close()


async def test_ingress_mode_routes_by_dst_override(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    default, named = await http_backend(tcp_server), await http_backend(tcp_server)
    serve_service(control, default.port)
    other = "api.emojivoto.svc.cluster.local:8080"
    control.plane.send(f"get:{other}", add(named.port))
    proxy = await discovery_proxy(start_proxy, control, LINKERD2_PROXY_INGRESS_MODE="true")
    reader, writer = await asyncio.open_connection(*proxy.outbound_addr)
    try:
        writer.write(
            f"GET /x HTTP/1.1\r\nhost: {AUTHORITY}\r\nl5d-dst-override: {other}\r\n\r\n".encode()
        )
        assert (await asyncio.wait_for(read_response(reader), 10))[0] == 200
        writer.write(f"GET /y HTTP/1.1\r\nhost: {AUTHORITY}\r\n\r\n".encode())
        assert (await asyncio.wait_for(read_response(reader), 10))[0] == 200
    finally:
        writer.close()
    assert (named.hits, default.hits) == (["/x"], ["/y"])


async def test_grpc_over_http2_reaches_a_discovered_endpoint(
    start_proxy: StartProxy, control: ControlPlane
) -> None:
    # The backend is itself a gRPC server (a second fake Destination with its own answers).
    backend_plane = Plane()
    backend_plane.send("profile:answer", profile("answered.by.backend"))
    backend = grpc.aio.server()
    destination_pb2_grpc.add_DestinationServicer_to_server(FakeDestination(backend_plane), backend)
    port = backend.add_insecure_port("127.0.0.1:0")
    await backend.start()
    try:
        serve_service(control, port)
        proxy = await discovery_proxy(start_proxy, control)
        addr = proxy.outbound_addr
        async with grpc.aio.insecure_channel(f"{addr.host}:{addr.port}") as channel:
            stub = destination_pb2_grpc.DestinationStub(channel)
            call = stub.GetProfile(destination_pb2.GetDestination(path="answer"))
            first: Any = await asyncio.wait_for(call.read(), 10)
            call.cancel()
        assert first.fully_qualified_name == "answered.by.backend"
        assert backend_plane.requests == [("profile", "answer")]
    finally:
        await backend.stop(None)


async def test_grpc_connect_to_a_refused_endpoint_is_redispatched(
    start_proxy: StartProxy, control: ControlPlane
) -> None:
    """HTTP/2 balances per upstream connection; a refused connect picks again before any
    stream fails, and the dead endpoint backs off."""
    backend_plane = Plane()
    backend_plane.send("profile:answer", profile("answered.by.backend"))
    backend = grpc.aio.server()
    destination_pb2_grpc.add_DestinationServicer_to_server(FakeDestination(backend_plane), backend)
    port = backend.add_insecure_port("127.0.0.1:0")
    await backend.start()
    dead = dead_port()
    try:
        serve_service(control, port, dead)
        proxy = await discovery_proxy(start_proxy, control)
        assert proxy.discovery is not None
        addr = proxy.outbound_addr
        calls = 0
        for _ in range(60):  # each channel is a new client connection, so a new pick
            async with grpc.aio.insecure_channel(f"{addr.host}:{addr.port}") as channel:
                stub = destination_pb2_grpc.DestinationStub(channel)
                call = stub.GetProfile(destination_pb2.GetDestination(path="answer"))
                first: Any = await asyncio.wait_for(call.read(), 10)
                call.cancel()
            assert first.fully_qualified_name == "answered.by.backend"
            calls += 1
            balancer = proxy.discovery.backends()[AUTHORITY].balancer
            if balancer.slot((ipaddress.ip_address("127.0.0.1"), dead)).reconnect.failures:
                break
        assert balancer.slot((ipaddress.ip_address("127.0.0.1"), dead)).reconnect.failures
        assert len(backend_plane.requests) == calls
    finally:
        await backend.stop(None)
