"""An HTTP/2 connection without discovery tries a failed upstream connect again.

The streams waiting for the connect carried nothing upstream, so a connect that timed out
(a peer busy with a burst of mTLS handshakes) is tried again, up to the bound the balanced
path's redispatch uses, before they are answered with its error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from gossamer_proxy.app import Proxy
from gossamer_proxy.errors import ProxyError, ProxyErrorKind
from gossamer_proxy.outbound.redispatch import MAX_CONNECT_ATTEMPTS
from raw_h2 import REQUEST, CountingH2Backend, RawH2Client, outbound_context, until

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]

pytestmark = pytest.mark.timeout(60)


async def _one_request(port: int) -> int:
    client = await RawH2Client.connect(port)
    try:
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, REQUEST, end_stream=True)
        await client.send(client.conn.data_to_send())
        await until(lambda: sid in client.responses, "the answer")
        return client.responses[sid]
    finally:
        client.close()


async def test_a_timed_out_connect_is_tried_again_and_the_stream_answered(
    start_proxy: StartProxy, tcp_server: TcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = CountingH2Backend()
    proxy = await start_proxy(await tcp_server(backend.handle))
    connector = outbound_context(proxy).connector
    real_open = connector.open
    attempts: list[str] = []

    async def first_times_out(endpoint: Any, factory: Callable[[], Any], **kw: Any) -> Any:
        attempts.append(str(endpoint))
        if len(attempts) == 1:
            raise ProxyError(ProxyErrorKind.CONNECT_TIMEOUT, str(endpoint))
        return await real_open(endpoint, factory, **kw)

    monkeypatch.setattr(connector, "open", first_times_out)
    assert await _one_request(proxy.outbound_addr.port) == 200
    assert len(attempts) == 2
    assert backend.streams == 1


async def test_a_connect_that_keeps_timing_out_answers_504_after_the_bound(
    start_proxy: StartProxy, tcp_server: TcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = CountingH2Backend()
    proxy = await start_proxy(await tcp_server(backend.handle))
    connector = outbound_context(proxy).connector
    attempts: list[str] = []

    async def always_times_out(endpoint: Any, factory: Callable[[], Any], **_: Any) -> Any:
        attempts.append(str(endpoint))
        raise ProxyError(ProxyErrorKind.CONNECT_TIMEOUT, str(endpoint))

    monkeypatch.setattr(connector, "open", always_times_out)
    assert await _one_request(proxy.outbound_addr.port) == 504
    assert len(attempts) == MAX_CONNECT_ATTEMPTS
    assert backend.connections == 0
