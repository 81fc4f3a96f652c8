"""Outbound policy (HTTPRoute) in the HTTP/1 data path, end to end on loopback.

Real proxies and backends, and one real gRPC server playing the control plane
(``Destination`` and ``OutboundPolicies``), driven by the test. The outbound listener's fixed
target stands in for the original destination (a "ClusterIP" nobody listens on,
``127.0.0.77:80``), so requests only arrive if the proxy resolves them: by the policy's
HTTPRoute backends, each a ``Get`` authority balanced over real backend ports. Every load
loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from fake_control_plane import ControlPlane, serve_control_plane
from google.protobuf.duration_pb2 import Duration
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import (
    destination_pb2,
    http_route_pb2,
    outbound_pb2,
)
from gossamer_proxy.app import Proxy
from gossamer_proxy.mesh.backoff import Backoff
from gossamer_proxy.mesh.outbound_policy import FailureAccrualSpec

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]

CLUSTER_IP = ("127.0.0.77", 80)
TARGET = f"{CLUSTER_IP[0]}:{CLUSTER_IP[1]}"
NS = "emojivoto"
SVC = f"web.{NS}.svc.cluster.local"
AUTHORITY = f"{SVC}:80"
V1 = f"web-v1.{NS}.svc.cluster.local:80"
V2 = f"web-v2.{NS}.svc.cluster.local:80"
WORKLOAD = '{"ns":"emojivoto","pod":"vote-bot-0"}'


# -- a control plane the test drives -----------------------------------------------------


@pytest.fixture
async def control() -> AsyncIterator[ControlPlane]:
    async with serve_control_plane() as running:
        yield running


# -- messages ----------------------------------------------------------------------------


def endpoints(*ports: int) -> destination_pb2.Update:
    return destination_pb2.Update(
        add=destination_pb2.WeightedAddrSet(
            addrs=[
                destination_pb2.WeightedAddr(addr=tcp_address_to_proto("127.0.0.1", p), weight=1)
                for p in ports
            ]
        )
    )


def profile(overrides: tuple[tuple[str, int], ...] = ()) -> destination_pb2.DestinationProfile:
    return destination_pb2.DestinationProfile(
        fully_qualified_name=SVC,
        dst_overrides=[destination_pb2.WeightedDst(authority=a, weight=w) for a, w in overrides],
    )


def seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


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


def rule(
    *weighted: tuple[str, int],
    header: tuple[str, str] | None = None,
    path_prefix: str | None = None,
    timeout: float | None = None,
) -> outbound_pb2.HttpRoute.Rule:
    message = outbound_pb2.HttpRoute.Rule()
    match = http_route_pb2.HttpRouteMatch()
    if path_prefix is not None:
        match.path.prefix = path_prefix
    if header is not None:
        match.headers.add(name=header[0], exact=header[1].encode())
    message.matches.append(match)
    for authority, weight in weighted:
        entry = message.backends.random_available.backends.add(weight=weight)
        entry.backend.backend.CopyFrom(service_backend(authority))
    if timeout is not None:
        message.timeouts.request.CopyFrom(seconds(timeout))
    return message


def http_route(name: str, *rules: outbound_pb2.HttpRoute.Rule) -> outbound_pb2.HttpRoute:
    route = outbound_pb2.HttpRoute(rules=list(rules))
    route.metadata.resource.group = "policy.linkerd.io"
    route.metadata.resource.kind = "HTTPRoute"
    route.metadata.resource.name = name
    route.metadata.resource.namespace = NS
    return route


def default_route() -> outbound_pb2.HttpRoute:
    """What the controller synthesizes for a Service without HTTPRoutes."""
    route = outbound_pb2.HttpRoute()
    route.metadata.default = "http"
    message = route.rules.add()
    message.matches.add().path.prefix = "/"
    message.backends.first_available.backends.add().backend.CopyFrom(service_backend(AUTHORITY))
    return route


def policy(
    *routes: outbound_pb2.HttpRoute, max_failures: int | None = None
) -> outbound_pb2.OutboundPolicy:
    message = outbound_pb2.OutboundPolicy()
    message.metadata.resource.group = "core"
    message.metadata.resource.kind = "Service"
    message.metadata.resource.name = "web"
    detect = message.protocol.detect
    detect.timeout.CopyFrom(seconds(10))
    detect.opaque.routes.add().rules.add().backends.first_available.backends.add().backend.CopyFrom(
        service_backend(AUTHORITY)
    )
    for http in (detect.http1, detect.http2):
        http.routes.extend(routes)
        if max_failures is not None:
            consecutive = http.failure_accrual.consecutive_failures
            consecutive.max_failures = max_failures
            consecutive.backoff.min_backoff.CopyFrom(seconds(30))
            consecutive.backoff.max_backoff.CopyFrom(seconds(60))
    return message


# -- backends and clients ----------------------------------------------------------------

Behaviour = Callable[[str], Awaitable[int]]


async def ok(path: str) -> int:
    return 200


@dataclass
class Backend:
    port: int
    hits: list[str]


async def http_backend(tcp_server: TcpServer, behaviour: Behaviour = ok) -> Backend:
    """An HTTP/1.1 keep-alive server recording request paths; ``behaviour`` picks the status."""
    hits: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                path = head.split(" ", 2)[1]
                hits.append(path)
                status = await behaviour(path)
                writer.write(b"HTTP/1.1 %d X\r\ncontent-length: 2\r\n\r\nok" % status)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    _, port = await tcp_server(handle)
    return Backend(port, hits)


class Client:
    """One keep-alive client connection to the proxy's outbound listener."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, proxy: Proxy) -> Client:
        addr = proxy.outbound_addr
        return cls(*await asyncio.open_connection(addr.host, addr.port))

    async def request(
        self, path: str = "/", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str]]:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.writer.write(f"GET {path} HTTP/1.1\r\nhost: {AUTHORITY}\r\n{extra}\r\n".encode())
        await self.writer.drain()
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 15)
        lines = head.decode("latin-1").split("\r\n")
        fields = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
        await self.reader.readexactly(int(fields.get("content-length", "0")))
        return int(lines[0].split(" ")[1]), fields

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def policy_proxy(start_proxy: StartProxy, control: ControlPlane) -> Proxy:
    return await start_proxy(
        CLUSTER_IP,
        LINKERD2_PROXY_DESTINATION_SVC_ADDR=control.addr,
        LINKERD2_PROXY_POLICY_SVC_ADDR=control.addr,
        LINKERD2_PROXY_POLICY_WORKLOAD=WORKLOAD,
        LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS="127.0.0.0/8",
        LINKERD2_PROXY_IDENTITY_DISABLED="true",
    )


async def run_requests(proxy: Proxy, count: int, *, clients: int = 8) -> dict[int, int]:
    statuses: dict[int, int] = defaultdict(int)

    async def worker(n: int) -> None:
        client = await Client.open(proxy)
        try:
            for _ in range(n):
                statuses[(await client.request())[0]] += 1
        finally:
            await client.close()

    share = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
    await asyncio.wait_for(asyncio.gather(*(worker(n) for n in share if n)), 120)
    return dict(statuses)


async def wait_until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def two_versions(tcp_server: TcpServer, control: ControlPlane) -> tuple[Backend, Backend]:
    """web-v1 and web-v2, each one backend behind its own ``Get`` authority."""
    v1, v2 = await http_backend(tcp_server), await http_backend(tcp_server)
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(v1.port))
    control.plane.send(f"get:{V2}", endpoints(v2.port))
    return v1, v2


# -- tests -------------------------------------------------------------------------------


async def test_weighted_backend_refs_split_90_10(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    v1, v2 = await two_versions(tcp_server, control)
    control.plane.send(f"policy:{TARGET}", policy(http_route("split", rule((V1, 90), (V2, 10)))))
    proxy = await policy_proxy(start_proxy, control)

    statuses = await run_requests(proxy, 2000)

    assert statuses == {200: 2000}
    assert len(v1.hits) + len(v2.hits) == 2000
    assert 0.07 <= len(v2.hits) / 2000 <= 0.13, len(v2.hits)
    # The proxy asked for the original destination, as the pod's workload.
    spec = control.plane.specs[0]
    assert spec.source_workload == WORKLOAD
    assert spec.addr.port == CLUSTER_IP[1]


async def test_header_match_sends_canary_requests_to_v2(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    v1, v2 = await two_versions(tcp_server, control)
    canary = http_route(
        "canary", rule((V2, 1), header=("x-canary", "1")), rule((V1, 1), path_prefix="/")
    )
    control.plane.send(f"policy:{TARGET}", policy(canary))
    proxy = await policy_proxy(start_proxy, control)
    client = await Client.open(proxy)
    try:
        for i in range(20):
            assert (await client.request(f"/c{i}", {"x-canary": "1"}))[0] == 200
            assert (await client.request(f"/p{i}"))[0] == 200
            assert (await client.request(f"/o{i}", {"x-canary": "0"}))[0] == 200
    finally:
        await client.close()
    assert all(p.startswith("/c") for p in v2.hits)
    assert len(v2.hits) == 20
    assert sorted(p[1] for p in v1.hits) == ["o"] * 20 + ["p"] * 20


async def test_policy_update_shifts_weights_on_an_open_connection(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    v1, v2 = await two_versions(tcp_server, control)
    control.plane.send(f"policy:{TARGET}", policy(http_route("split", rule((V1, 100), (V2, 0)))))
    proxy = await policy_proxy(start_proxy, control)
    client = await Client.open(proxy)
    try:
        for _ in range(50):
            assert (await client.request())[0] == 200
        assert (len(v1.hits), len(v2.hits)) == (50, 0)

        control.plane.send(
            f"policy:{TARGET}", policy(http_route("split", rule((V1, 0), (V2, 100))))
        )
        for _ in range(500):  # until the update has arrived (bounded)
            assert (await client.request())[0] == 200
            if v2.hits:
                break
            await asyncio.sleep(0.01)
        assert v2.hits, "the weight shift never reached the open connection"
        before = len(v1.hits)
        for _ in range(50):
            assert (await client.request())[0] == 200
        assert len(v1.hits) == before
        assert len(v2.hits) == 51
    finally:
        await client.close()


async def test_route_timeout_answers_504(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    async def slow(path: str) -> int:
        if path.startswith("/slow"):
            await asyncio.sleep(3)
        return 200

    v1 = await http_backend(tcp_server, slow)
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(v1.port))
    timed = http_route(
        "timed", rule((V1, 1), path_prefix="/slow", timeout=0.2), rule((V1, 1), path_prefix="/")
    )
    control.plane.send(f"policy:{TARGET}", policy(timed))
    proxy = await policy_proxy(start_proxy, control)
    client = await Client.open(proxy)
    try:
        status, headers = await client.request("/slow/1")
        assert status == 504
        assert headers["l5d-proxy-error"] == "response timed out"
        assert (await client.request("/fast"))[0] == 200  # the connection still works
    finally:
        await client.close()


async def test_unmatched_request_gets_404_and_zero_weights_get_500(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    v1, _ = await two_versions(tcp_server, control)
    routes = http_route("api", rule((V1, 1), path_prefix="/api"), rule((V1, 0), path_prefix="/off"))
    control.plane.send(f"policy:{TARGET}", policy(routes))
    proxy = await policy_proxy(start_proxy, control)
    client = await Client.open(proxy)
    try:
        assert (await client.request("/api/x"))[0] == 200
        status, headers = await client.request("/elsewhere")
        assert (status, headers["l5d-proxy-error"]) == (404, "no route found")
        status, headers = await client.request("/off")
        assert (status, headers["l5d-proxy-error"]) == (500, "no backends available")
        assert (await client.request("/api/y"))[0] == 200
    finally:
        await client.close()
    assert v1.hits == ["/api/x", "/api/y"]


async def test_profile_dst_overrides_take_precedence_over_the_policy(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    v1, v2 = await http_backend(tcp_server), await http_backend(tcp_server)
    control.plane.send(f"profile:{TARGET}", profile(overrides=((V1, 10000),)))
    control.plane.send(f"get:{V1}", endpoints(v1.port))
    control.plane.send(f"get:{V2}", endpoints(v2.port))
    control.plane.send(f"policy:{TARGET}", policy(http_route("split", rule((V2, 1)))))
    proxy = await policy_proxy(start_proxy, control)

    assert await run_requests(proxy, 40, clients=2) == {200: 40}
    assert (len(v1.hits), len(v2.hits)) == (40, 0)


@pytest.mark.parametrize("answer", ["not_found", "unimplemented", "default_route"])
async def test_without_httproutes_the_service_is_balanced_as_before(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane, answer: str
) -> None:
    web = await http_backend(tcp_server)
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{AUTHORITY}", endpoints(web.port))
    message: Any = {
        "not_found": grpc.StatusCode.NOT_FOUND,
        "unimplemented": grpc.StatusCode.UNIMPLEMENTED,
        "default_route": policy(default_route()),
    }[answer]
    control.plane.send(f"policy:{TARGET}", message)
    proxy = await policy_proxy(start_proxy, control)

    assert await run_requests(proxy, 20, clients=2) == {200: 20}
    assert len(web.hits) == 20
    # Linkerd counts such traffic on the Service's default route; without a policy, nowhere.
    default = {"parent_name": "web", "route_kind": "default", "route_name": "http"}
    counted = 20 if answer == "default_route" else 0
    statuses = "outbound_http_route_request_statuses_total"
    assert _series(proxy, statuses, **default, hostname=SVC, http_status="200") == counted
    requests = "outbound_http_route_backend_requests_total"
    assert _series(proxy, requests, **default, backend_name="web") == counted


async def test_control_plane_down_keeps_the_last_policy(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    v1, v2 = await two_versions(tcp_server, control)
    control.plane.send(f"policy:{TARGET}", policy(http_route("all-v2", rule((V2, 1)))))
    proxy = await policy_proxy(start_proxy, control)
    client = await Client.open(proxy)
    try:
        assert (await client.request())[0] == 200
        await control.server.stop(None)
        for _ in range(5):
            assert (await client.request())[0] == 200
    finally:
        await client.close()
    other = await Client.open(proxy)  # a new connection while the control plane is away
    try:
        for _ in range(5):
            assert (await other.request())[0] == 200
    finally:
        await other.close()
    assert (len(v1.hits), len(v2.hits)) == (0, 11)


async def test_policy_failure_accrual_ejects_an_endpoint_answering_5xx(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    """With the Service's opt-in, 5xx answers count: three in a row eject the endpoint.

    The 500 endpoint is at first the backend's only one, so it gets the first three requests
    whatever the balancer's latency estimates say. Once it is ejected (for at least 30 s) a
    healthy endpoint added beside it takes every request and nothing else reaches it.
    """

    async def broken(path: str) -> int:
        return 500

    good, bad = await http_backend(tcp_server), await http_backend(tcp_server, broken)
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(bad.port))
    control.plane.send(f"policy:{TARGET}", policy(http_route("web", rule((V1, 1))), max_failures=3))
    proxy = await policy_proxy(start_proxy, control)
    assert proxy.discovery is not None
    client = await Client.open(proxy)
    try:
        for _ in range(3):
            status, headers = await client.request()
            assert status == 500
            assert "l5d-proxy-error" not in headers  # the app's answer, not the proxy's
        accrual = FailureAccrualSpec(3, Backoff(min=30.0, max=60.0, jitter_ratio=0.0))
        balancer = proxy.discovery.backends(accrual)[V1].balancer
        assert balancer.ejected() == [(ipaddress.ip_address("127.0.0.1"), bad.port)]

        control.plane.send(f"get:{V1}", endpoints(good.port))
        await wait_until(lambda: len(balancer) == 2)
        for _ in range(20):
            assert (await client.request())[0] == 200
    finally:
        await client.close()
    assert (len(bad.hits), len(good.hits)) == (3, 20)
    assert V1 not in proxy.discovery.backends()  # kept apart from default-accrual backends


async def test_unused_policy_watch_is_dropped_after_the_idle_timeout(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    _, v2 = await two_versions(tcp_server, control)
    control.plane.send(f"policy:{TARGET}", policy(http_route("all-v2", rule((V2, 1)))))
    proxy = await start_proxy(
        CLUSTER_IP,
        LINKERD2_PROXY_DESTINATION_SVC_ADDR=control.addr,
        LINKERD2_PROXY_POLICY_SVC_ADDR=control.addr,
        LINKERD2_PROXY_DESTINATION_CONTEXT='{"ns":"emojivoto","nodeName":"n","pod":"bot-1"}',
        LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS="127.0.0.0/8",
        LINKERD2_PROXY_IDENTITY_DISABLED="true",
        LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT="200ms",
    )
    assert proxy.discovery is not None
    policies = proxy.discovery.policies
    assert policies is not None
    client = await Client.open(proxy)
    try:
        assert (await client.request())[0] == 200
        assert policies.watching() == [CLUSTER_IP]
        proxy._housekeeping()  # in use: kept
        assert policies.watching() == [CLUSTER_IP]
    finally:
        await client.close()
    for _ in range(100):  # bounded: 100 x 50 ms
        await asyncio.sleep(0.05)
        proxy._housekeeping()
        if not policies.watching():
            break
    assert policies.watching() == []
    assert len(v2.hits) == 1
    # Without a policy workload, the destination context names the client.
    assert control.plane.specs[0].source_workload == '{"ns":"emojivoto","pod":"bot-1"}'


def _series(proxy: Proxy, name: str, **labels: str) -> float:
    """The sum of ``name`` over the series whose labels include ``labels``."""
    total = 0.0
    for line in proxy.metrics.registry.render().decode().splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_route_and_backend_families_follow_linkerd(
    start_proxy: StartProxy, tcp_server: TcpServer, control: ControlPlane
) -> None:
    async def flaky(path: str) -> int:
        return 503 if path == "/bad" else 200

    v1 = await http_backend(tcp_server, flaky)
    v2 = await http_backend(tcp_server)
    control.plane.send(f"profile:{TARGET}", profile())
    control.plane.send(f"get:{V1}", endpoints(v1.port))
    control.plane.send(f"get:{V2}", endpoints(v2.port))
    canary = http_route(
        "canary", rule((V2, 1), header=("x-canary", "1")), rule((V1, 1), path_prefix="/")
    )
    message = policy(canary)
    message.metadata.resource.namespace = NS
    message.metadata.resource.port = 80
    control.plane.send(f"policy:{TARGET}", message)
    proxy = await policy_proxy(start_proxy, control)
    client = await Client.open(proxy)
    try:
        assert (await client.request("/a"))[0] == 200
        assert (await client.request("/bad"))[0] == 503
        assert (await client.request("/c", {"x-canary": "1"}))[0] == 200
    finally:
        await client.close()

    route = {
        "parent_group": "core",
        "parent_kind": "Service",
        "parent_namespace": NS,
        "parent_name": "web",
        "parent_port": "80",
        "route_group": "policy.linkerd.io",
        "route_kind": "HTTPRoute",
        "route_namespace": NS,
        "route_name": "canary",
    }
    statuses = "outbound_http_route_request_statuses_total"
    assert _series(proxy, statuses, **route, hostname=SVC, http_status="200") == 2
    assert _series(proxy, statuses, **route, hostname=SVC, http_status="503") == 1
    duration = "outbound_http_route_request_duration_seconds_count"
    assert _series(proxy, duration, **route, hostname=SVC) == 3
    backend_requests = "outbound_http_route_backend_requests_total"
    assert _series(proxy, backend_requests, **route, backend_name="web-v1") == 2
    assert _series(proxy, backend_requests, **route, backend_name="web-v2") == 1
    backend_statuses = "outbound_http_route_backend_response_statuses_total"
    assert _series(proxy, backend_statuses, **route, backend_name="web-v1", http_status="503") == 1
    assert _series(proxy, "outbound_http_route_backend_response_duration_seconds_count") == 3
    # The legacy families are still there beside the new ones.
    assert _series(proxy, "response_total", direction="outbound") == 3

    proxy._housekeeping()  # refresh the balancer gauges now rather than on the next tick
    endpoints_gauge = "outbound_http_balancer_endpoints"
    assert (
        _series(
            proxy,
            endpoints_gauge,
            parent_name="web",
            parent_namespace=NS,
            backend_kind="Service",
            backend_name="web-v1",
            endpoint_state="ready",
        )
        == 1
    )
    assert _series(proxy, "proxy_build_info", vendor="gossamer", profile="release") == 1
