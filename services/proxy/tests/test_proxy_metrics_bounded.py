"""Metric series that untrusted input creates stay bounded and expire (issue 16)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import httpx
import pytest
from gossamer_common.settings import SettingsError
from gossamer_proxy.app import Proxy
from gossamer_proxy.config import load_settings
from gossamer_proxy.metrics import OVERFLOW_AUTHORITY, BoundedValues, ProxyMetrics, TargetLabels

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]

_TARGET = TargetLabels("outbound", "10.0.0.1", 80, False)


def _authorities(text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("request_total{"):
            match = re.search(r'authority="([^"]*)"', line)
            name = match.group(1) if match else ""
            totals[name] = totals.get(name, 0) + float(line.rsplit(" ", 1)[1])
    return totals


def _serve(metrics: ProxyMetrics, authority: str, status: int = 200) -> None:
    stats = metrics.http(_TARGET, authority)
    stats.requests.value += 1
    stats.observe_latency(status, 3.0)
    stats.response(status)


def test_bounded_values_admit_up_to_the_limit() -> None:
    values = BoundedValues(2, "_overflow")
    assert [values.admit(v) for v in ("a", "b", "c", "a")] == ["a", "b", "_overflow", "a"]
    values.retain({"b"})
    assert values.admit("c") == "c"
    assert values.admit("d") == "_overflow"


def test_five_thousand_hosts_make_a_bounded_number_of_series() -> None:
    metrics = ProxyMetrics(max_authorities=8)
    for i in range(5000):
        _serve(metrics, f"h{i}.example:80")
    assert len(metrics.request_total) == 9  # 8 authorities and the overflow
    assert len(metrics.response_latency_ms) == 9
    text = metrics.registry.render().decode()
    totals = _authorities(text)
    assert totals[OVERFLOW_AUTHORITY] == 5000 - 8
    assert sum(totals.values()) == 5000
    assert len(text) < 64 * 1024


def test_idle_series_expire_and_free_their_authority() -> None:
    metrics = ProxyMetrics(retain_idle=600.0, max_authorities=2)
    held = metrics.http(_TARGET, "kept:80")  # a connection still holds this one
    held.requests.value += 1
    _serve(metrics, "gone:80")
    _serve(metrics, "late:80")  # over the limit: overflow
    assert set(_authorities(metrics.registry.render().decode())) == {
        "kept:80",
        "gone:80",
        OVERFLOW_AUTHORITY,
    }
    assert metrics.expire_idle(0.0) == 0  # starts the idle clocks
    assert metrics.expire_idle(599.0) == 0
    assert metrics.expire_idle(600.0) > 0
    assert set(_authorities(metrics.registry.render().decode())) == {"kept:80"}
    # The freed slot admits a new authority again.
    _serve(metrics, "late:80")
    assert set(_authorities(metrics.registry.render().decode())) == {"kept:80", "late:80"}


def test_active_series_do_not_expire() -> None:
    metrics = ProxyMetrics(retain_idle=10.0)
    _serve(metrics, "busy:80")
    metrics.expire_idle(0.0)
    for now in (5.0, 10.0, 15.0, 20.0):
        _serve(metrics, "busy:80")
        assert metrics.expire_idle(now) == 0
    assert _authorities(metrics.registry.render().decode()) == {"busy:80": 5}


def test_peer_chosen_grpc_status_is_bounded() -> None:
    metrics = ProxyMetrics()
    stats = metrics.http(_TARGET, "a:80")
    for code in range(1000, 1100):
        stats.response(200, code)
    assert len(metrics.response_total) == 1
    assert 'grpc_status="2"' in metrics.registry.render().decode()


def test_retain_idle_setting_takes_linkerd_durations() -> None:
    assert load_settings({}).metrics_retain_idle == 600.0
    for text, seconds in (("10m", 600.0), ("90s", 90.0), ("1h", 3600.0), ("0", 0.0)):
        settings = load_settings({"LINKERD2_PROXY_METRICS_RETAIN_IDLE": text})
        assert settings.metrics_retain_idle == seconds
    with pytest.raises(SettingsError, match="LINKERD2_PROXY_METRICS_RETAIN_IDLE"):
        load_settings({"LINKERD2_PROXY_METRICS_RETAIN_IDLE": "ten minutes"})
    with pytest.raises(SettingsError, match="GOSSAMER_PROXY_METRICS_MAX_AUTHORITIES"):
        load_settings({"GOSSAMER_PROXY_METRICS_MAX_AUTHORITIES": "0"})


@pytest.mark.timeout(60)
async def test_many_hosts_through_the_proxy_fold_into_overflow(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    backend = await tcp_server(app)
    proxy = await start_proxy(
        backend, GOSSAMER_PROXY_METRICS_MAX_AUTHORITIES="4", LINKERD2_PROXY_METRICS_RETAIN_IDLE="2m"
    )
    assert proxy.metrics.retain_idle == 120.0
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    for i in range(200):
        writer.write(b"GET / HTTP/1.1\r\nHost: h%d.example\r\n\r\n" % i)
        await reader.readuntil(b"content-length: 0\r\n\r\n")
    writer.close()
    async with httpx.AsyncClient() as admin:
        text = (await admin.get(f"http://127.0.0.1:{proxy.admin_port}/metrics")).text
    totals = _authorities(text)
    assert len(totals) == 5
    assert totals[OVERFLOW_AUTHORITY] == 196
    assert sum(totals.values()) == 200


@pytest.mark.timeout(60)
async def test_series_of_closed_connections_expire_in_the_running_proxy(
    start_proxy: StartProxy, tcp_server: TcpServer
) -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    backend = await tcp_server(app)
    proxy = await start_proxy(backend, LINKERD2_PROXY_METRICS_RETAIN_IDLE="10m")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.outbound_addr.port)
    for i in range(3):
        writer.write(b"GET / HTTP/1.1\r\nHost: h%d.example\r\n\r\n" % i)
        await reader.readuntil(b"content-length: 0\r\n\r\n")
    metrics = proxy.metrics
    now = asyncio.get_running_loop().time()
    metrics.expire_idle(now)
    # Held by the open connection: nothing expires, however long it idles.
    assert metrics.expire_idle(now + 3600) == 0
    assert len(_authorities(metrics.registry.render().decode())) == 3
    writer.close()
    await writer.wait_closed()
    async with asyncio.timeout(10):
        while proxy.in_flight():  # noqa: ASYNC110 - bounded poll; no close event to await
            await asyncio.sleep(0.01)  # the proxy notices the close
    # Unchanged for an hour and now released: the request series go at once.
    assert metrics.expire_idle(now + 3600) > 0
    assert _authorities(metrics.registry.render().decode()) == {}
