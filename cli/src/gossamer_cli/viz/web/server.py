"""The dashboard's asyncio HTTP server: reads one request per connection (bounded in size by
the parser and in time here), checks the Host header, routes, and closes.

Routing and the checks are in :meth:`Dashboard.respond`, which the tests call with parsed
requests; :func:`serve` is the socket side.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from gossamer_cli.viz import edges as edges_mod
from gossamer_cli.viz import stat as stat_mod
from gossamer_cli.viz.web import guard, pages
from gossamer_cli.viz.web.data import DashboardData, DataError, Detail
from gossamer_cli.viz.web.httpio import (
    BadRequestError,
    Request,
    Response,
    new_parser,
    next_request,
    redirect,
    text_response,
)

log = structlog.get_logger("gossamer.viz.web")

HEAD_TIMEOUT = 10.0
WRITE_TIMEOUT = 30.0
MAX_CONNECTIONS = 64
READ_CHUNK = 4096
JSON = "application/json"
KIND_SEGMENTS = {"deployments": "deployment", "pods": "pod"}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class Dashboard:
    data: DashboardData
    enforced_host: re.Pattern[str]
    clock: Callable[[], str] = _now

    async def respond(self, request: Request) -> Response:
        if request.path == "/ready":  # probes name the pod's address: no Host check
            return text_response(200, "ready")
        if not guard.host_allowed(request.header("host"), self.enforced_host):
            return text_response(
                403,
                "host not allowed: open the dashboard through a name it serves "
                "(see --enforced-host)",
            )
        if request.method not in ("GET", "HEAD"):
            return text_response(405, "only GET and HEAD")
        try:
            return await self._route(request.path)
        except guard.BadNameError as exc:
            return text_response(400, str(exc))
        except DataError as exc:
            log.warning("prometheus query failed", error=str(exc))
            body = pages.message_page("Prometheus unavailable", str(exc), now=self.clock())
            return Response(502, body.encode())

    async def _route(self, path: str) -> Response:
        if path == "/":
            return redirect("/namespaces")
        if path == "/favicon.ico":
            return Response(204, b"", "text/plain; charset=utf-8")
        if path == pages.STYLESHEET_PATH:
            return Response(200, pages.STYLESHEET.encode(), "text/css; charset=utf-8")
        api = path.startswith("/api/")
        parts = path.removeprefix("/api").strip("/").split("/")
        if parts[0] != "namespaces" or len(parts) > 5:
            return text_response(404, "not found")
        if len(parts) == 5:
            kind = KIND_SEGMENTS.get(parts[2])
            if api or parts[4] != "tap" or kind is None:
                return text_response(404, "not found")
            namespace = guard.namespace_name(parts[1])
            name = guard.resource_name(parts[3])
            view = await self.data.tap(namespace, kind, name)
            status = 200 if not view.error else 502
            return Response(status, pages.tap_page(view, now=self.clock()).encode())
        if len(parts) == 1:
            table = await self.data.namespaces()
            if api:
                return _json(stat_mod.render_json(table.rows))
            return _html(pages.namespaces_page(table, now=self.clock()))
        namespace = guard.namespace_name(parts[1])
        if len(parts) == 2:
            if api:
                return text_response(404, "not found: use .../deployments, .../pods, .../edges")
            deployments, pods = await asyncio.gather(
                self.data.workloads(namespace, "deployment"), self.data.workloads(namespace, "pod")
            )
            return _html(pages.namespace_page(namespace, deployments, pods, now=self.clock()))
        section = parts[2]
        if len(parts) == 3 and section == "edges":
            found = await self.data.edges(namespace)
            if api:
                return _json(edges_mod.render_json(found))
            return _html(pages.edges_page(namespace, found, now=self.clock()))
        kind = KIND_SEGMENTS.get(section)
        if kind is None:
            return text_response(404, "not found")
        if len(parts) == 3:
            if not api:
                return redirect(f"/namespaces/{namespace}")
            table = await self.data.workloads(namespace, kind)
            return _json(stat_mod.render_json(table.rows))
        name = guard.resource_name(parts[3])
        detail = await self.data.detail(namespace, kind, name)
        if api:
            return _json(_detail_json(detail))
        status = 200 if detail.exists else 404
        return Response(status, pages.detail_page(detail, now=self.clock()).encode())


def _html(text: str) -> Response:
    return Response(200, text.encode())


def _json(text: str) -> Response:
    return Response(200, text.encode(), JSON)


def _detail_json(detail: Detail) -> str:
    def rows(items: list[stat_mod.StatRow]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(stat_mod.render_json(items))
        return found

    return json.dumps(
        {
            "resource": rows([detail.row])[0],
            "pods": rows(detail.pods),
            "inbound": rows(detail.inbound),
            "outbound": rows(detail.outbound),
        },
        indent=2,
    )


async def handle_connection(
    dashboard: Dashboard, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    parser = new_parser()
    try:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                while (request := next_request(parser)) is None:
                    data = await reader.read(READ_CHUNK)
                    if not data:
                        return
                    parser.feed(data)
        except BadRequestError as exc:
            response, head_only = text_response(exc.status, str(exc)), False
        except (TimeoutError, ConnectionError):
            return
        else:
            response, head_only = await dashboard.respond(request), request.method == "HEAD"
        writer.write(response.encode(head_only=head_only))
        async with asyncio.timeout(WRITE_TIMEOUT):
            await writer.drain()
    except (TimeoutError, ConnectionError):
        pass
    except Exception:
        log.exception("dashboard request failed")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def serve(dashboard: Dashboard, host: str, port: int) -> asyncio.Server:
    """Listen; connections beyond :data:`MAX_CONNECTIONS` at once are closed unanswered."""
    active = 0

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        if active >= MAX_CONNECTIONS:
            writer.close()
            return
        active += 1
        try:
            await handle_connection(dashboard, reader, writer)
        finally:
            active -= 1

    return await asyncio.start_server(on_connection, host, port)
