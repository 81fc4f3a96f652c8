"""The proxy's admin listener: /live, /ready, /metrics, /shutdown, /proxy-log-level, /env.json."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable

import httpx
import pytest
import structlog
from gossamer_common.log_filter import LogFilter
from gossamer_common.logging import configure_logging
from gossamer_proxy.app import Proxy
from gossamer_proxy.config import load_settings

StartProxy = Callable[..., Awaitable[Proxy]]

pytestmark = pytest.mark.timeout(60)


async def test_live_ready_and_metrics(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(("127.0.0.1", 9))
    base = f"http://127.0.0.1:{proxy.admin_port}"
    async with httpx.AsyncClient(base_url=base) as client:
        live = await client.get("/live")
        assert (live.status_code, live.text) == (200, "live\n")
        ready = await client.get("/ready")
        assert (ready.status_code, ready.text) == (200, "ready\n")
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert (await client.get("/nope")).status_code == 404
        # Disabled by default, as in Linkerd.
        assert (await client.post("/shutdown")).status_code == 404
    assert not proxy.shutdown_control.requested


async def test_shutdown_endpoint_when_enabled(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(("127.0.0.1", 9), LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED="true")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxy.admin_port}") as client:
        assert (await client.get("/shutdown")).status_code == 405
        assert not proxy.shutdown_control.requested
        response = await client.post("/shutdown")
        assert response.status_code == 200
    await asyncio.wait_for(proxy.shutdown_control.wait(), 5)
    assert proxy.shutdown_control.reason == "admin /shutdown"


async def test_env_json_and_no_log_level_without_our_logging(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(("127.0.0.1", 9))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxy.admin_port}") as client:
        env = await client.get("/env.json")
        assert env.status_code == 200
        assert env.headers["content-type"] == "application/json"
        assert all(k.startswith(("LINKERD2_PROXY_", "GOSSAMER_PROXY_")) for k in env.json())
        # A Proxy built without the process's log levels has no /proxy-log-level (Linkerd: 404).
        assert (await client.get("/proxy-log-level")).status_code == 404


async def test_proxy_log_level_over_loopback_changes_live_loggers() -> None:
    stream = io.StringIO()
    levels = configure_logging(
        component="proxy", stream=stream, log_filter=LogFilter.parse("warn,linkerd=info")
    )
    settings = load_settings(
        {
            "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS": "127.0.0.1:0",
            "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "127.0.0.1:0",
            "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "127.0.0.1:0",
            "GOSSAMER_PROXY_OUTBOUND_FIXED_TARGET": "127.0.0.1:9",
        }
    )
    proxy = Proxy(settings, process_metrics=False, log_levels=levels)
    await proxy.start()
    try:
        log = structlog.get_logger("gossamer.proxy.outbound")
        log.debug("before_put")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxy.admin_port}") as client:
            assert (await client.get("/proxy-log-level")).text == "warn,linkerd=info"
            put = await client.put("/proxy-log-level", content="warn,linkerd=debug")
            assert put.status_code == 204
            bad = await client.put("/proxy-log-level", content="warn,linkerd=chatty")
            assert bad.status_code == 400
            assert "invalid level 'chatty'" in bad.text
            assert (await client.get("/proxy-log-level")).text == "warn,linkerd=debug"
        log.debug("after_put")
        assert "after_put" in stream.getvalue()
        assert "before_put" not in stream.getvalue()
    finally:
        await proxy.shutdown()
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
