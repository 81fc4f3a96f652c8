"""`gossamer viz dashboard`: its refusals, and the port forwarder it runs (on loopback)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from gossamer_cli.main import cli
from gossamer_cli.viz.forward import NetnsConnector, forward


def test_without_a_local_mesh_it_says_how_to_reach_the_dashboard(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["viz", "dashboard", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no local mesh" in result.output
    assert "port-forward svc/web 8084" in result.output


def test_a_mesh_without_prometheus_has_no_dashboard(tmp_path: Path) -> None:
    (tmp_path / "ready.json").write_text(json.dumps({"node_netns": "x", "dashboard_url": None}))
    result = CliRunner().invoke(cli, ["viz", "dashboard", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "runs no dashboard" in result.output


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="setns needs root")
async def test_forwarder_relays_both_ways_through_a_namespace_thread() -> None:
    # This process's own namespace stands in for the node's: the relay is the same.
    connector = NetnsConnector(f"/proc/{os.getpid()}/ns/net")
    await connector.check()
    target = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = target.sockets[0].getsockname()[1]
    server = await forward(connector, "127.0.0.1", 0, ("127.0.0.1", port))
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        payload = os.urandom(1 << 20)  # far more than one chunk: backpressure both ways
        writer.write(payload)
        writer.write_eof()
        echoed = await asyncio.wait_for(reader.read(-1), 30)
        assert echoed == payload
        writer.close()
    finally:
        server.close()
        target.close()
        connector.close()


async def test_a_namespace_that_cannot_be_entered_is_an_error(tmp_path: Path) -> None:
    connector = NetnsConnector(str(tmp_path / "missing"))
    try:
        with pytest.raises(OSError, match="cannot enter"):
            await connector.check()
    finally:
        connector.close()
