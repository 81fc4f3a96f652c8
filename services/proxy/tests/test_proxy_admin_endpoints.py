"""The proxy's admin listener: /live, /ready, /metrics and /shutdown (Linkerd's contract)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest
from gossamer_proxy.app import Proxy

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
