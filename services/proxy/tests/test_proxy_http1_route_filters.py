"""HTTPRoute filters, policy retries, l5d-* directives and dst_* labels in the HTTP/1 proxy.

End to end on loopback: a real proxy, real HTTP/1.1 backends and one real gRPC server playing
the control plane (``Destination`` and ``OutboundPolicies``). The outbound listener's fixed
target is a "ClusterIP" nobody listens on (``127.0.0.77:80``), so requests only reach a
backend through the policy's routes. Every load loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from fake_control_plane import Plane, serve_control_plane
from google.protobuf.duration_pb2 import Duration
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import (
    destination_pb2,
    http_route_pb2,
    http_types_pb2,
    outbound_pb2,
)
from gossamer_proxy.app import Proxy

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]

CLUSTER_IP = ("127.0.0.77", 80)
TARGET = f"{CLUSTER_IP[0]}:{CLUSTER_IP[1]}"
NS = "emojivoto"
SVC = f"web.{NS}.svc.cluster.local"
AUTHORITY = f"{SVC}:80"
Rule = outbound_pb2.HttpRoute.Rule
Filter = outbound_pb2.HttpRoute.Filter


# -- a control plane the test drives -----------------------------------------------------


@pytest.fixture
async def plane() -> AsyncIterator[tuple[Plane, str]]:
    async with serve_control_plane() as running:
        yield running.plane, running.addr


# -- messages ----------------------------------------------------------------------------


def seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


def endpoints(port: int, **labels: str) -> destination_pb2.Update:
    addr = destination_pb2.WeightedAddr(
        addr=tcp_address_to_proto("127.0.0.1", port), weight=1, metric_labels=labels
    )
    return destination_pb2.Update(
        add=destination_pb2.WeightedAddrSet(
            addrs=[addr], metric_labels={"namespace": NS, "service": "web"}
        )
    )


def backend_ref() -> outbound_pb2.Backend:
    backend = outbound_pb2.Backend(
        queue=outbound_pb2.Queue(capacity=100, failfast_timeout=seconds(3))
    )
    backend.metadata.resource.kind = "Service"
    backend.metadata.resource.name = "web"
    backend.balancer.discovery.dst.path = AUTHORITY
    backend.balancer.peak_ewma.default_rtt.CopyFrom(seconds(0.03))
    backend.balancer.peak_ewma.decay.CopyFrom(seconds(10))
    return backend


def rule(prefix: str, *filters: Filter, backend_filters: tuple[Filter, ...] = ()) -> Rule:
    message = Rule(filters=list(filters))
    message.matches.add().path.prefix = prefix
    entry = message.backends.random_available.backends.add(weight=1)
    entry.backend.backend.CopyFrom(backend_ref())
    entry.backend.filters.extend(backend_filters)
    return message


def policy(*rules: Rule) -> outbound_pb2.OutboundPolicy:
    message = outbound_pb2.OutboundPolicy()
    message.metadata.resource.kind = "Service"
    message.metadata.resource.name = "web"
    route = outbound_pb2.HttpRoute(rules=list(rules))
    route.metadata.resource.group = "policy.linkerd.io"
    route.metadata.resource.kind = "HTTPRoute"
    route.metadata.resource.name = "web-route"
    route.metadata.resource.namespace = NS
    message.protocol.http1.routes.append(route)
    return message


def header_list(*pairs: tuple[str, str]) -> http_types_pb2.Headers:
    return http_types_pb2.Headers(
        headers=[http_types_pb2.Headers.Header(name=n, value=v.encode()) for n, v in pairs]
    )


def retry(rule_: Rule, max_retries: int, *, timeout: float | None = None) -> Rule:
    rule_.retry.max_retries = max_retries
    rule_.retry.conditions.status_ranges.add(start=500, end=599)
    rule_.retry.backoff.min_backoff.CopyFrom(seconds(0.001))
    rule_.retry.backoff.max_backoff.CopyFrom(seconds(0.01))
    if timeout is not None:
        rule_.retry.timeout.CopyFrom(seconds(timeout))
    return rule_


# -- backends and clients ----------------------------------------------------------------


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


Behaviour = Callable[[Seen], Awaitable[int]]


async def always_ok(seen: Seen) -> int:
    return 200


@dataclass
class Backend:
    port: int
    seen: list[Seen]


async def http_backend(tcp_server: TcpServer, behaviour: Behaviour = always_ok) -> Backend:
    """Keep-alive HTTP/1.1 server recording each request; answers with a response header
    the response filters can act on."""
    seen: list[Seen] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                lines = head.split("\r\n")
                fields = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        fields[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(fields.get("content-length", "0")))
                request = Seen(lines[0].split(" ")[1], fields, body)
                seen.append(request)
                status = await behaviour(request)
                writer.write(
                    b"HTTP/1.1 %d X\r\nx-backend-secret: s3cr3t\r\ncontent-length: 2\r\n\r\nok"
                    % status
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    _, port = await tcp_server(handle)
    return Backend(port, seen)


class Client:
    """One keep-alive client connection to the proxy's outbound listener."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, proxy: Proxy) -> Client:
        addr = proxy.outbound_addr
        return cls(*await asyncio.open_connection(addr.host, addr.port))

    async def request(
        self, path: str = "/", headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, dict[str, str]]:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        method = "POST" if body else "GET"
        length = f"content-length: {len(body)}\r\n" if body else ""
        head = f"{method} {path} HTTP/1.1\r\nhost: {AUTHORITY}\r\n{extra}{length}\r\n"
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 15)
        lines = raw.decode("latin-1").split("\r\n")
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


async def mesh(
    start_proxy: StartProxy,
    tcp_server: TcpServer,
    plane: tuple[Plane, str],
    message: outbound_pb2.OutboundPolicy,
    behaviour: Behaviour = always_ok,
) -> tuple[Proxy, Backend]:
    state, addr = plane
    web = await http_backend(tcp_server, behaviour)
    state.send(f"profile:{TARGET}", destination_pb2.DestinationProfile(fully_qualified_name=SVC))
    state.send(f"get:{AUTHORITY}", endpoints(web.port, pod="web-0", deployment="web"))
    state.send(f"policy:{TARGET}", message)
    proxy = await start_proxy(
        CLUSTER_IP,
        LINKERD2_PROXY_DESTINATION_SVC_ADDR=addr,
        LINKERD2_PROXY_POLICY_SVC_ADDR=addr,
        LINKERD2_PROXY_POLICY_WORKLOAD='{"ns":"emojivoto","pod":"bot-0"}',
        LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS="127.0.0.0/8",
        LINKERD2_PROXY_IDENTITY_DISABLED="true",
    )
    return proxy, web


# -- filters -------------------------------------------------------------------------------


async def test_header_modifiers_rewrite_the_request_and_the_response(
    start_proxy: StartProxy, tcp_server: TcpServer, plane: tuple[Plane, str]
) -> None:
    request_modifier = Filter(
        request_header_modifier=http_route_pb2.RequestHeaderModifier(
            set=header_list(("x-env", "canary")),
            add=header_list(("x-added", "1")),
            remove=["x-secret"],
        )
    )
    response_modifier = Filter(
        response_header_modifier=http_route_pb2.ResponseHeaderModifier(
            add=header_list(("x-served-by", "gossamer")), remove=["x-backend-secret"]
        )
    )
    proxy, web = await mesh(
        start_proxy,
        tcp_server,
        plane,
        policy(rule("/", request_modifier, response_modifier)),
    )
    client = await Client.open(proxy)
    try:
        status, headers = await client.request(
            "/a", {"x-env": "prod", "x-secret": "hunter2", "x-keep": "k"}
        )
        assert status == 200
        assert headers["x-served-by"] == "gossamer"
        assert "x-backend-secret" not in headers
        status, _ = await client.request("/b", {"x-env": "prod"})  # the connection keeps going
        assert status == 200
    finally:
        await client.close()
    first = web.seen[0].headers
    assert (first["x-env"], first["x-added"], first["x-keep"]) == ("canary", "1", "k")
    assert "x-secret" not in first
    assert first["host"] == AUTHORITY
    assert [s.path for s in web.seen] == ["/a", "/b"]


async def test_redirect_is_answered_by_the_proxy(
    start_proxy: StartProxy, tcp_server: TcpServer, plane: tuple[Plane, str]
) -> None:
    redirect = Filter(
        redirect=http_route_pb2.RequestRedirect(
            path=http_route_pb2.PathModifier(prefix="/new"), status=301
        )
    )
    proxy, web = await mesh(
        start_proxy, tcp_server, plane, policy(rule("/old", redirect), rule("/"))
    )
    client = await Client.open(proxy)
    try:
        status, headers = await client.request("/old/page?q=1")
        assert status == 301
        assert headers["location"] == f"http://{SVC}/new/page?q=1"
        assert (await client.request("/other"))[0] == 200
    finally:
        await client.close()
    assert [s.path for s in web.seen] == ["/other"]


async def test_failure_injectors_at_ratio_one_answer_every_request(
    start_proxy: StartProxy, tcp_server: TcpServer, plane: tuple[Plane, str]
) -> None:
    injected = Filter(
        failure_injector=http_route_pb2.HttpFailureInjector(
            status=503,
            message="chaos drill",
            ratio=http_route_pb2.Ratio(numerator=1, denominator=1),
        )
    )
    missing = Filter(
        failure_injector=http_route_pb2.HttpFailureInjector(
            status=500, message="Service not found web-v3"
        )
    )
    proxy, web = await mesh(
        start_proxy,
        tcp_server,
        plane,
        policy(rule("/chaos", injected), rule("/v3", backend_filters=(missing,)), rule("/")),
    )
    client = await Client.open(proxy)
    try:
        for _ in range(20):
            status, headers = await client.request("/chaos")
            assert (status, headers["l5d-proxy-error"]) == (503, "chaos drill")
        status, headers = await client.request("/v3")
        assert (status, headers["l5d-proxy-error"]) == (500, "Service not found web-v3")
        assert (await client.request("/fine"))[0] == 200
    finally:
        await client.close()
    assert [s.path for s in web.seen] == ["/fine"]
    text = proxy.metrics.registry.render().decode()
    assert any(
        line.startswith("response_total{") and 'status_code="503"' in line and line.endswith(" 20")
        for line in text.splitlines()
    )


async def test_an_invalid_filter_answers_500_and_the_other_routes_still_work(
    start_proxy: StartProxy, tcp_server: TcpServer, plane: tuple[Plane, str]
) -> None:
    bad = Filter(redirect=http_route_pb2.RequestRedirect(status=200))
    proxy, web = await mesh(start_proxy, tcp_server, plane, policy(rule("/bad", bad), rule("/")))
    client = await Client.open(proxy)
    try:
        status, headers = await client.request("/bad")
        assert status == 500
        assert headers["l5d-proxy-error"] == (
            "invalid route filter: redirect: status 200 is not a redirection (3xx)"
        )
        assert (await client.request("/good"))[0] == 200
    finally:
        await client.close()
    assert [s.path for s in web.seen] == ["/good"]


# -- retries and timeouts -----------------------------------------------------------------


def flaky(failure_rate: float, seed: int) -> Behaviour:
    rng = random.Random(seed)

    async def behaviour(seen: Seen) -> int:
        return 500 if rng.random() < failure_rate else 200

    return behaviour


async def run(proxy: Proxy, path: str, count: int, *, clients: int = 4) -> dict[int, int]:
    statuses: dict[int, int] = defaultdict(int)

    async def worker(n: int) -> None:
        client = await Client.open(proxy)
        try:
            for _ in range(n):
                statuses[(await client.request(path))[0]] += 1
        finally:
            await client.close()

    await asyncio.wait_for(asyncio.gather(*(worker(count // clients) for _ in range(clients))), 120)
    return dict(statuses)


async def test_policy_retries_turn_a_30_percent_failing_backend_into_99_percent_success(
    start_proxy: StartProxy, tcp_server: TcpServer, plane: tuple[Plane, str]
) -> None:
    proxy, web = await mesh(
        start_proxy,
        tcp_server,
        plane,
        policy(retry(rule("/retried"), 5), rule("/plain")),
        flaky(0.3, seed=11),
    )
    plain = await run(proxy, "/plain", 200)
    retried = await run(proxy, "/retried", 400)

    assert plain.get(500, 0) >= 30  # without retries about 30 % fail
    assert retried.get(200, 0) >= 396, retried  # >= 99 %
    attempts = sum(1 for s in web.seen if s.path == "/retried")
    assert attempts > 400  # the failures were sent again


async def test_retries_replay_the_body_and_respect_max_request_bytes(
    start_proxy: StartProxy, tcp_server: TcpServer, plane: tuple[Plane, str]
) -> None:
    bodies: dict[bytes, int] = defaultdict(int)

    async def fail_first_time(seen: Seen) -> int:
        bodies[seen.body] += 1
        return 503 if bodies[seen.body] == 1 else 200

    limited = retry(rule("/"), 2)
    limited.retry.max_request_bytes = 1024
    proxy, web = await mesh(start_proxy, tcp_server, plane, policy(limited), fail_first_time)
    client = await Client.open(proxy)
    try:
        small = b"s" * 1000
        assert (await client.request("/upload", body=small))[0] == 200
        large = b"L" * 2000  # over max_request_bytes: not kept, so not retried
        assert (await client.request("/upload", body=large))[0] == 503
    finally:
        await client.close()
    assert [s.body for s in web.seen] == [small, small, large]


async def test_a_timed_out_attempt_is_retried_within_the_request_timeout(
    start_proxy: StartProxy, tcp_server: TcpServer, plane: tuple[Plane, str]
) -> None:
    calls = 0

    async def first_hangs(seen: Seen) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(30)
        return 200

    # The retry must answer within the per-attempt timeout: 2 s, which a busy machine keeps.
    timed = retry(rule("/"), 2, timeout=2.0)
    timed.timeouts.request.CopyFrom(seconds(10))
    proxy, web = await mesh(start_proxy, tcp_server, plane, policy(timed), first_hangs)
    client = await Client.open(proxy)
    try:
        assert (await client.request("/slow-once"))[0] == 200
    finally:
        await client.close()
    assert [s.path for s in web.seen] == ["/slow-once", "/slow-once"]


async def test_l5d_retry_headers_apply_only_where_the_route_allows_them(
    start_proxy: StartProxy, tcp_server: TcpServer, plane: tuple[Plane, str]
) -> None:
    async def fail_teapot(seen: Seen) -> int:
        return 418 if seen.path.endswith("/teapot") else 200

    allowed = rule("/allowed")
    allowed.allow_l5d_request_headers = True
    proxy, web = await mesh(
        start_proxy, tcp_server, plane, policy(allowed, rule("/denied")), fail_teapot
    )
    directives = {"l5d-retry-http": "418", "l5d-retry-limit": "2", "l5d-retry-timeout": "2s"}
    client = await Client.open(proxy)
    try:
        assert (await client.request("/allowed/teapot", directives))[0] == 418
        assert (await client.request("/denied/teapot", directives))[0] == 418
        bad = {"l5d-retry-limit": "many", "l5d-retry-http": "418"}
        assert (await client.request("/allowed/teapot", bad))[0] == 418
    finally:
        await client.close()
    paths = [s.path for s in web.seen]
    # 1 + 2 retries where allowed; once where not; the bad limit is ignored (one retry).
    assert paths.count("/allowed/teapot") == 3 + 2
    assert paths.count("/denied/teapot") == 1
    for seen in web.seen:  # always stripped
        assert not any(name.startswith("l5d-retry") for name in seen.headers)


async def test_l5d_timeout_header_bounds_the_request(
    start_proxy: StartProxy, tcp_server: TcpServer, plane: tuple[Plane, str]
) -> None:
    async def slow(seen: Seen) -> int:
        await asyncio.sleep(3)
        return 200

    allowed = rule("/")
    allowed.allow_l5d_request_headers = True
    proxy, _ = await mesh(start_proxy, tcp_server, plane, policy(allowed), slow)
    client = await Client.open(proxy)
    try:
        status, headers = await client.request("/x", {"l5d-timeout": "200ms"})
        assert (status, headers["l5d-proxy-error"]) == (504, "response timed out")
    finally:
        await client.close()


# -- dst_* labels ---------------------------------------------------------------------------


async def test_outbound_metrics_carry_the_endpoints_dst_labels(
    start_proxy: StartProxy, tcp_server: TcpServer, plane: tuple[Plane, str]
) -> None:
    proxy, _ = await mesh(start_proxy, tcp_server, plane, policy(rule("/")))
    client = await Client.open(proxy)
    try:
        assert (await client.request("/"))[0] == 200
    finally:
        await client.close()
    text = proxy.metrics.registry.render().decode()
    dst = 'dst_deployment="web",dst_namespace="emojivoto",dst_pod="web-0",dst_service="web"'
    for family in ("request_total", "response_total", "response_latency_ms_count"):
        lines = [
            line
            for line in text.splitlines()
            if line.startswith(family + "{") and 'direction="outbound"' in line
        ]
        assert lines, family
        assert any(dst in line for line in lines), (family, lines)
    tcp = [
        line
        for line in text.splitlines()
        if line.startswith("tcp_open_total{") and 'peer="dst"' in line
    ]
    assert any(dst in line for line in tcp), tcp
    assert '=""' not in text
