"""A proxy with tracing off loads nothing of it (the sidecar's memory budget is 40 MB).

Each check runs in a fresh interpreter: the proxy is started and serves one request
through its outbound listener, then ``sys.modules`` is inspected. With a collector
configured the same run does load the tracing modules, which shows the check can fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from gossamer_proxy.app import Proxy
from gossamer_proxy.config import load_settings
from gossamer_proxy.local_identity import IdentityConfigError
from gossamer_proxy.mesh.channels import ControlAddressError

PROGRAM = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from gossamer_proxy.app import Proxy
    from gossamer_proxy.config import load_settings

    async def main():
        async def app(reader, writer):
            await reader.readuntil(b"\\r\\n\\r\\n")
            writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-length: 0\\r\\n\\r\\n")
            await writer.drain()
            writer.close()

        backend = await asyncio.start_server(app, "127.0.0.1", 0)
        port = backend.sockets[0].getsockname()[1]
        env = {
            "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS": "127.0.0.1:0",
            "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "127.0.0.1:0",
            "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "127.0.0.1:0",
            "GOSSAMER_PROXY_OUTBOUND_FIXED_TARGET": f"127.0.0.1:{port}",
            **json.loads(sys.argv[1]),
        }
        proxy = Proxy(load_settings(env), process_metrics=False)
        await proxy.start()
        out = proxy.outbound_addr
        reader, writer = await asyncio.open_connection(out.host, out.port)
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        writer.write(f"GET / HTTP/1.1\\r\\nhost: a\\r\\ntraceparent: {tp}\\r\\n\\r\\n".encode())
        assert (await reader.readuntil(b"\\r\\n\\r\\n")).startswith(b"HTTP/1.1 200")
        writer.close()
        await proxy.shutdown()
        backend.close()

    asyncio.run(main())
    loaded = sorted(
        m for m in sys.modules
        if m.startswith(("gossamer_proxy.tracing", "opentelemetry"))
        or m.startswith("gossamer_api.proxy.otlp_")
    )
    print(json.dumps(loaded))
    """
)


def _loaded_modules(env: dict[str, str]) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, json.dumps(env)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_a_proxy_without_a_collector_loads_no_tracing_module() -> None:
    assert _loaded_modules({}) == []


def test_a_proxy_with_a_collector_does_load_them() -> None:
    loaded = _loaded_modules(
        {
            "LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR": "127.0.0.1:9",
            "GOSSAMER_PROXY_TRACE_BATCH_DELAY": "1h",
        }
    )
    assert "gossamer_proxy.tracing.propagation" in loaded
    assert "gossamer_api.proxy.otlp_trace_service_pb2" in loaded


def test_bad_collector_settings_stop_the_proxy_before_it_starts() -> None:
    with pytest.raises(ControlAddressError, match="not host:port"):
        Proxy(
            load_settings({"LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR": "collector"}),
            process_metrics=False,
        )
    with pytest.raises(IdentityConfigError, match="own identity"):
        Proxy(
            load_settings(
                {
                    "LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR": "collector.tracing:4317",
                    "LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME": "collector.tracing.serviceaccount",
                }
            ),
            process_metrics=False,
        )
