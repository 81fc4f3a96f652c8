"""Linkerd's inbound HTTP access log (LINKERD2_PROXY_ACCESS_LOG=apache|json)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
from gossamer_proxy.access_log import AccessLog, rfc3339_nanos
from gossamer_proxy.app import Proxy
from gossamer_proxy.config import load_settings

StartProxy = Callable[..., Awaitable[Proxy]]
TcpServer = Callable[..., Awaitable[tuple[str, int]]]

pytestmark = pytest.mark.timeout(60)

_EPOCH_NS = 1_661_286_500_071_809_491  # 2022-08-23T20:28:20.071809491Z


def _log(fmt: str) -> tuple[AccessLog, list[str]]:
    lines: list[str] = []
    return AccessLog(fmt, lines.append, clock_ns=lambda: _EPOCH_NS), lines


def test_timestamp_has_nanoseconds() -> None:
    assert rfc3339_nanos(_EPOCH_NS) == "2022-08-23T20:28:20.071809491Z"


def test_json_fields_are_linkerds() -> None:
    log, lines = _log("json")
    entry = log.begin(
        client_addr="10.42.0.70:32996",
        client_id="web.ns.serviceaccount.identity.gossamer.cluster.local",
        method=b"POST",
        uri=b"http://webapp:7000/books",
        version="HTTP/2.0",
        headers=[
            (b"content-length", b"43"),
            (b"user-agent", b"Go-http-client/1.1"),
            (b":authority", b"webapp:7000"),
            (b"x-request-id", b"rid"),
            (b"x-b3-traceid", b"b3"),
        ],
        now=10.0,
    )
    entry.forwarded(10.001)
    entry.respond(303, 19, 10.5)
    entry.respond(500, None, 11.0)  # written once
    assert len(lines) == 1
    assert json.loads(lines[0]) == {
        "client.addr": "10.42.0.70:32996",
        "client.id": "web.ns.serviceaccount.identity.gossamer.cluster.local",
        "host": "webapp:7000",
        "method": "POST",
        "processing_ns": "1000000",
        "request_bytes": "43",
        "response_bytes": "19",
        "status": 303,
        "timestamp": "2022-08-23T20:28:20.071809491Z",
        "total_ns": "500000000",
        "trace_id": "b3",
        "uri": "http://webapp:7000/books",
        "user_agent": "Go-http-client/1.1",
        "version": "HTTP/2.0",
    }


def test_apache_common_log_format() -> None:
    log, lines = _log("apache")
    entry = log.begin(
        client_addr="10.42.0.1:43682",
        client_id=None,
        method=b"GET",
        uri=b'/ping"\x01',
        version="HTTP/1.1",
        headers=[],
        now=0.0,
    )
    entry.respond(200, None, 0.1)
    assert lines == [
        '10.42.0.1:43682 - - [2022-08-23T20:28:20.071809491Z] "GET /ping\\"\\x01 HTTP/1.1" 200\n'
    ]


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="apache or json"):
        AccessLog("xml", print)
    with pytest.raises(ValueError, match="apache or json"):
        load_settings({"LINKERD2_PROXY_ACCESS_LOG": "xml"})
    with pytest.raises(ValueError, match="plain or json"):
        load_settings({"LINKERD2_PROXY_LOG_FORMAT": "xml"})
    settings = load_settings(
        {"LINKERD2_PROXY_LOG_FORMAT": "PLAIN", "LINKERD2_PROXY_ACCESS_LOG": ""}
    )
    assert (settings.log_format, settings.access_log) == ("plain", None)


async def _http1_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok")
    await writer.drain()
    writer.close()


def _access_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"client.addr"')]


async def test_inbound_http1_requests_are_logged(
    start_proxy: StartProxy, tcp_server: TcpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    host, port = await tcp_server(_http1_app)
    proxy = await start_proxy(
        GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"{host}:{port}", LINKERD2_PROXY_ACCESS_LOG="json"
    )
    url = f"http://127.0.0.1:{proxy.inbound_addr.port}/ping?x=1"
    async with httpx.AsyncClient() as client:
        rsp = await client.get(url, headers={"user-agent": "probe/1", "x-request-id": "r-1"})
    assert rsp.status_code == 201
    (line,) = _access_lines(capsys.readouterr().err)
    assert line["method"] == "GET"
    assert line["uri"] == "/ping?x=1"
    assert line["version"] == "HTTP/1.1"
    assert line["status"] == 201
    assert line["response_bytes"] == "2"
    assert line["trace_id"] == "r-1"
    assert line["user_agent"] == "probe/1"
    assert line["client.id"] == "-"
    assert str(line["client.addr"]).startswith("127.0.0.1:")
    assert int(str(line["total_ns"])) >= int(str(line["processing_ns"])) >= 0


async def test_proxy_made_responses_are_logged_and_outbound_is_not(
    start_proxy: StartProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens at the target: the proxy answers 502 itself.
    proxy = await start_proxy(
        ("127.0.0.1", 9),
        GOSSAMER_PROXY_INBOUND_FIXED_TARGET="127.0.0.1:9",
        LINKERD2_PROXY_ACCESS_LOG="json",
    )
    async with httpx.AsyncClient() as client:
        inbound = await client.get(f"http://127.0.0.1:{proxy.inbound_addr.port}/in")
        outbound = await client.get(f"http://127.0.0.1:{proxy.outbound_addr.port}/out")
    assert inbound.status_code == outbound.status_code == 502
    lines = _access_lines(capsys.readouterr().err)
    assert [(x["uri"], x["status"]) for x in lines] == [("/in", 502)]
    assert lines[0]["processing_ns"] == lines[0]["total_ns"]


async def test_inbound_http2_requests_are_logged(
    start_proxy: StartProxy, tcp_server: TcpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.StreamEnded):
                    conn.send_headers(
                        event.stream_id,
                        [(b":status", b"200"), (b"content-length", b"2")],
                    )
                    conn.send_data(event.stream_id, b"ok", end_stream=True)
            writer.write(conn.data_to_send())
            await writer.drain()
        writer.close()

    host, port = await tcp_server(app)
    proxy = await start_proxy(
        GOSSAMER_PROXY_INBOUND_FIXED_TARGET=f"{host}:{port}", LINKERD2_PROXY_ACCESS_LOG="apache"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.inbound_addr.port)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    conn.send_headers(
        1,
        [(b":method", b"GET"), (b":path", b"/books"), (b":scheme", b"http"),
         (b":authority", b"webapp:7000")],
        end_stream=True,
    )  # fmt: skip
    writer.write(conn.data_to_send())
    done = False
    async with asyncio.timeout(10):
        while not done:
            data = await reader.read(65536)
            assert data
            for event in conn.receive_data(data):
                done = done or isinstance(event, h2.events.StreamEnded)
            writer.write(conn.data_to_send())
    writer.close()
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if '"GET ' in x]
    assert line.startswith("127.0.0.1:")
    assert line.endswith(' - - [' + line.split("[", 1)[1].split("]", 1)[0] + '] '
                         '"GET http://webapp:7000/books HTTP/2.0" 200')  # fmt: skip


async def test_off_by_default(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(GOSSAMER_PROXY_INBOUND_FIXED_TARGET="127.0.0.1:9")
    assert proxy.access_log is None
    assert all(ctx.observers is None for ctx in proxy.contexts)
