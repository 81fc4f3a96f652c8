"""The admin HTTP/1.1 server every Gossamer component exposes (Linkerd's 4191/999x port).

Built-in routes follow the Linkerd proxy's admin contract:

- ``GET /metrics``: Prometheus text exposition, gzip-compressed when the client allows it;
- ``GET /live``: ``200 live\\n`` while the event loop is able to answer;
- ``GET /ready``: ``200 ready\\n`` or ``503 not ready\\n`` from a readiness callback;
- ``POST /shutdown``: loopback peers only, ``404`` unless enabled, ``405`` for other methods;
- ``GET|PUT /proxy-log-level`` (loopback peers only) and ``GET /env.json``, added by
  :func:`add_debug_routes` (see there).

Components add routes with :meth:`AdminServer.add_route`. Request parsing is the
sans-io :mod:`gossamer_common.http_request_parser`; this module is the asyncio glue
plus the pure routing decision (:meth:`AdminServer.dispatch`), which tests call directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ipaddress
import json
import os
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

import structlog

from gossamer_common.http_request_parser import BadRequest, RequestParser
from gossamer_common.log_control import LogLevels
from gossamer_common.log_filter import LogFilterError
from gossamer_common.logging import REDACTED, is_secret_key
from gossamer_common.metrics import CONTENT_TYPE, Registry

__all__ = [
    "AdminRequest",
    "AdminResponse",
    "AdminServer",
    "Handler",
    "accepts_gzip",
    "accepts_json",
    "add_debug_routes",
    "is_loopback",
    "serialize_response",
    "text_response",
]

_TEXT = "text/plain; charset=utf-8"
_log = structlog.get_logger("gossamer.admin")


@dataclass(frozen=True, slots=True)
class AdminRequest:
    """What a route handler sees: the parsed request plus the peer's IP address."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    peer: str

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None


@dataclass(frozen=True, slots=True)
class AdminResponse:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


Handler = Callable[[AdminRequest], Awaitable[AdminResponse]]


@dataclass(frozen=True, slots=True)
class _Route:
    handler: Handler
    methods: frozenset[str]
    loopback_only: bool


def text_response(status: int, text: str, headers: Iterable[tuple[str, str]] = ()) -> AdminResponse:
    return AdminResponse(status, (("content-type", _TEXT), *headers), text.encode())


def is_loopback(peer: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``)."""
    try:
        addr = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` value allows gzip (``gzip``/``x-gzip``/``*`` with q > 0)."""
    if not accept_encoding:
        return False
    allowed: dict[str, bool] = {}
    for item in accept_encoding.split(","):
        coding, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for p in params:
            key, _, value = p.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        allowed[coding.lower()] = q > 0
    for name in ("gzip", "x-gzip"):
        if name in allowed:
            return allowed[name]
    return allowed.get("*", False)


def accepts_json(accept: str | None) -> bool:
    """Linkerd's check: no ``Accept``, or one naming JSON, ``application/*`` or ``*/*``."""
    if accept is None:
        return True
    return any(t in accept for t in ("application/json", "application/*", "*/*"))


def _json_response(status: int, value: object) -> AdminResponse:
    body = json.dumps(value, sort_keys=True).encode()
    return AdminResponse(status, (("content-type", "application/json"),), body)


_ENV_PREFIXES = ("LINKERD2_PROXY_", "GOSSAMER_PROXY_")
_MAX_ENV_NAMES = 256


def _exposed_env(name: str, value: str | None) -> str | None:
    if value is None or not name.startswith(_ENV_PREFIXES):
        return None
    return REDACTED if is_secret_key(name) else value


def add_debug_routes(
    server: AdminServer, levels: LogLevels | None, *, environ: Mapping[str, str] | None = None
) -> None:
    """Add Linkerd's debugging routes to ``server``:

    - ``GET /proxy-log-level``: the current filter as text (``warn,linkerd=info``);
      ``PUT`` with a filter as the body replaces it (``204``), a bad one is ``400`` with the
      reason. Loopback peers only (``403`` otherwise), as in Linkerd. Without ``levels``
      (logging not ours to change) the route is absent (``404``), as in Linkerd without tracing.
    - ``GET /env.json``: the proxy's ``LINKERD2_PROXY_*`` (and ``GOSSAMER_PROXY_*``)
      environment as a JSON object; ``?A&B`` asks for just those names (``null`` when
      unset or not a proxy setting). Linkerd serves the whole environment; we serve only
      the proxy's settings, and values whose name looks like a credential are redacted.
      A query with ``=`` is ``400``; an ``Accept`` that excludes JSON is ``406``.
    """
    env = os.environ if environ is None else environ

    async def log_level(request: AdminRequest) -> AdminResponse:
        assert levels is not None
        if request.method == "PUT":
            try:
                text = request.body.decode("utf-8")
            except UnicodeDecodeError:
                return text_response(400, "log level filter must be UTF-8\n")
            try:
                new = levels.set_from_text(text)
            except LogFilterError as e:
                _log.warning("log_level_rejected", error=str(e))
                return text_response(400, str(e))
            _log.info("log_level_set", level=str(new))
            return AdminResponse(204)
        return text_response(200, str(levels.current))  # as Linkerd: no newline

    async def env_json(request: AdminRequest) -> AdminResponse:
        if not accepts_json(request.header("accept")):
            return AdminResponse(406, (("content-type", _TEXT),), b"application/json")
        if not request.query:
            return _json_response(
                200,
                {k: _exposed_env(k, v) for k, v in env.items() if k.startswith(_ENV_PREFIXES)},
            )
        if "=" in request.query:
            msg = "env.json query parameters may not contain key-value pairs"
            return _json_response(400, {"error": msg, "status": 400})
        names = [urllib.parse.unquote(n) for n in request.query.split("&") if n]
        if len(names) > _MAX_ENV_NAMES:
            msg = f"env.json takes at most {_MAX_ENV_NAMES} names"
            return _json_response(400, {"error": msg, "status": 400})
        return _json_response(200, {n: _exposed_env(n, env.get(n)) for n in names})

    if levels is not None:
        server.add_route("/proxy-log-level", log_level, methods=("GET", "PUT"), loopback_only=True)
    server.add_route("/env.json", env_json, methods=("GET",))


def serialize_response(resp: AdminResponse, *, keep_alive: bool, head: bool = False) -> bytes:
    """Encode a response with Content-Length framing (and ``Connection: close`` when closing)."""
    try:
        reason = HTTPStatus(resp.status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {resp.status} {reason}"]
    lines.extend(f"{k}: {v}" for k, v in resp.headers if k.lower() != "content-length")
    lines.append(f"content-length: {len(resp.body)}")
    if not keep_alive:
        lines.append("connection: close")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head_bytes if head else head_bytes + resp.body


@dataclass(slots=True)
class _Connection:
    task: asyncio.Task[None]
    busy: bool = False
    writer: asyncio.StreamWriter | None = field(default=None)


class AdminServer:
    """Serves the admin routes; start with :meth:`start`, stop with :meth:`close`."""

    def __init__(
        self,
        *,
        registry: Registry | None = None,
        ready: Callable[[], bool] = lambda: True,
        on_shutdown: Callable[[], None] | None = None,
        shutdown_enabled: bool = False,
        idle_timeout: float = 60.0,
        request_timeout: float = 10.0,
        max_header_bytes: int = 16 * 1024,
        max_body_bytes: int = 1 << 20,
    ) -> None:
        self.registry = registry
        self.ready = ready
        self.on_shutdown = on_shutdown
        self.shutdown_enabled = shutdown_enabled and on_shutdown is not None
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._routes: dict[str, _Route] = {}
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._closing = False
        #: Renders ``/metrics`` instead of ``registry`` when set (a multi-core proxy merges
        #: its workers' metrics into its own).
        self.render_metrics: Callable[[], Awaitable[bytes]] | None = None
        self.add_route("/live", self._live, methods=("GET",))
        self.add_route("/ready", self._ready, methods=("GET",))
        if registry is not None:
            self.add_route("/metrics", self._metrics, methods=("GET",))

    # -- routes ---------------------------------------------------------------------------

    def add_route(
        self,
        path: str,
        handler: Handler,
        *,
        methods: Iterable[str] = ("GET",),
        loopback_only: bool = False,
    ) -> None:
        """Register ``handler`` for an exact ``path``; GET routes answer HEAD as well."""
        if not path.startswith("/"):
            raise ValueError(f"admin route path must start with '/': {path!r}")
        if path in self._routes or path == "/shutdown":
            raise ValueError(f"admin route {path!r} is already registered")
        allowed = frozenset(m.upper() for m in methods)
        if "GET" in allowed:
            allowed |= {"HEAD"}
        self._routes[path] = _Route(handler, allowed, loopback_only)

    async def dispatch(self, request: AdminRequest) -> AdminResponse:
        """Choose and run the handler; the one place the routing rules live."""
        if request.path == "/shutdown":
            return self._shutdown(request)
        route = self._routes.get(request.path)
        if route is None:
            return text_response(404, "not found\n")
        if request.method not in route.methods:
            allow = ", ".join(sorted(route.methods))
            return text_response(405, "method not allowed\n", (("allow", allow),))
        if route.loopback_only and not is_loopback(request.peer):
            return text_response(403, "forbidden: only available from localhost\n")
        return await route.handler(request)

    async def _live(self, request: AdminRequest) -> AdminResponse:
        return text_response(200, "live\n")

    async def _ready(self, request: AdminRequest) -> AdminResponse:
        if self.ready():
            return text_response(200, "ready\n")
        return text_response(503, "not ready\n")

    async def _metrics(self, request: AdminRequest) -> AdminResponse:
        assert self.registry is not None
        if self.render_metrics is not None:
            body = await self.render_metrics()
        else:
            body = self.registry.render()
        headers = [("content-type", CONTENT_TYPE), ("vary", "accept-encoding")]
        if accepts_gzip(request.header("accept-encoding")):
            body = gzip.compress(body, compresslevel=5)
            headers.append(("content-encoding", "gzip"))
        return AdminResponse(200, tuple(headers), body)

    def _shutdown(self, request: AdminRequest) -> AdminResponse:
        if not self.shutdown_enabled or self.on_shutdown is None:
            return text_response(404, "not found\n")
        if request.method != "POST":
            return text_response(405, "method not allowed\n", (("allow", "POST"),))
        if not is_loopback(request.peer):
            return text_response(403, "forbidden: shutdown is only available from localhost\n")
        self.on_shutdown()
        return text_response(200, "shutdown\n")

    # -- I/O ------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        """Bind and start accepting (port 0 picks a free port; see :attr:`port`)."""
        self._server = await asyncio.start_server(self._accept, host, port, reuse_address=True)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("admin server is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, drop idle connections, let in-flight requests finish (bounded)."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections.values()):
            if not conn.busy:
                conn.task.cancel()
        tasks = [c.task for c in self._connections.values()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing:
            writer.close()
            return
        conn = _Connection(task, writer=writer)
        self._connections[task] = conn
        try:
            await self._serve(reader, writer, conn)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Connection
    ) -> None:
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) else ""
        parser = RequestParser(
            max_header_bytes=self.max_header_bytes, max_body_bytes=self.max_body_bytes
        )
        loop = asyncio.get_running_loop()
        deadline: float | None = None  # bounds the time to receive one whole request
        while True:
            try:
                request = parser.next_request()
            except BadRequest as e:
                resp = text_response(e.status, f"{e.reason}\n")
                writer.write(serialize_response(resp, keep_alive=False))
                await writer.drain()
                return
            if request is None:
                if parser.buffered and deadline is None:
                    deadline = loop.time() + self.request_timeout
                timeout = self.idle_timeout if deadline is None else deadline - loop.time()
                try:
                    async with asyncio.timeout(max(timeout, 0)):
                        data = await reader.read(65536)
                except TimeoutError:
                    if parser.buffered:
                        resp = text_response(408, "request timeout\n")
                        writer.write(serialize_response(resp, keep_alive=False))
                        await writer.drain()
                    return
                if not data:
                    return
                if deadline is None:
                    deadline = loop.time() + self.request_timeout
                parser.feed(data)
                continue
            deadline = loop.time() + self.request_timeout if parser.buffered else None
            conn.busy = True
            try:
                resp = await self.dispatch(
                    AdminRequest(
                        request.method,
                        request.path,
                        request.query,
                        request.headers,
                        request.body,
                        peer,
                    )
                )
            except Exception:  # a broken handler must not take the admin server down
                _log.exception("admin_handler_failed", path=request.path, method=request.method)
                resp = text_response(500, "internal error\n")
            keep_alive = request.keep_alive and not self._closing
            writer.write(
                serialize_response(resp, keep_alive=keep_alive, head=request.method == "HEAD")
            )
            await writer.drain()
            conn.busy = False
            if not keep_alive:
                return
