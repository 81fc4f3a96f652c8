"""The demo application: a web front end (HTTP/1.1) that calls two gRPC backends.

    python app.py web --listen 0.0.0.0:8080 --slow slow.demo.svc.cluster.local:9090 \
        --flaky flaky.demo.svc.cluster.local:9090
    python app.py backend --listen 0.0.0.0:9090 --delay-ms 150          # the slow one
    python app.py backend --listen 0.0.0.0:9090 --failure-rate 0.3      # the flaky one
    python app.py traffic --target web.demo.svc.cluster.local:8080 --rps 20 --max-seconds 3600

The backends speak real gRPC (``demo.Quote/Get``) with JSON message bodies, so the demo needs no
generated code. Every role is an ordinary program: run alone it knows nothing about the mesh.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import time
from typing import Any

import grpc
from aiohttp import ClientSession, ClientTimeout, web

SERVICE = "demo.Quote"
METHOD = f"/{SERVICE}/Get"


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _loads(data: bytes) -> Any:
    return json.loads(data)


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


async def run_backend(args: argparse.Namespace) -> None:
    name = os.environ.get("POD_NAME", socket.gethostname())

    async def get(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if args.delay_ms:
            await asyncio.sleep(random.uniform(0.5, 1.5) * args.delay_ms / 1000)
        if random.random() < args.failure_rate:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "flaky backend failed on purpose")
        return {"from": name, "quote": f"quote #{random.randint(1, 1000)}", "asked": request}

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {"Get": grpc.unary_unary_rpc_method_handler(get, _loads, _dumps)},
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(args.listen)
    await server.start()
    print(f"backend {name} listening on {args.listen}", flush=True)
    await _until_signalled()
    await server.stop(grace=5)


async def run_web(args: argparse.Namespace) -> None:
    channels = {
        "slow": grpc.aio.insecure_channel(args.slow),
        "flaky": grpc.aio.insecure_channel(args.flaky),
    }
    calls = {
        name: ch.unary_unary(METHOD, request_serializer=_dumps, response_deserializer=_loads)
        for name, ch in channels.items()
    }

    async def index(request: web.Request) -> web.Response:
        started = time.monotonic()
        results: dict[str, Any] = {}
        status = 200
        for name, call in calls.items():
            try:
                results[name] = await call({"path": request.path}, timeout=2.0)
            except grpc.aio.AioRpcError as exc:
                results[name] = {"error": exc.code().name, "details": exc.details()}
                status = 502
        results["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
        return web.json_response(results, status=status)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = _split(args.listen)
    await web.TCPSite(runner, host, port).start()
    print(f"web listening on {args.listen}", flush=True)
    await _until_signalled()
    await runner.cleanup()
    for ch in channels.values():
        await ch.close()


async def run_traffic(args: argparse.Namespace) -> None:
    """A bounded, rate-limited client: at most --rps requests a second for --max-seconds."""
    deadline = time.monotonic() + args.max_seconds
    interval = 1.0 / args.rps
    stop = asyncio.Event()
    _on_signal(stop.set)
    async with ClientSession(timeout=ClientTimeout(total=5)) as session:
        sent = 0
        while time.monotonic() < deadline and not stop.is_set() and sent < args.max_requests:
            tick = time.monotonic()
            try:
                async with session.get(f"http://{args.target}/") as response:
                    await response.read()
            except Exception as exc:
                print(f"request failed: {exc!r}", flush=True)
            sent += 1
            pause = max(0.0, interval - (time.monotonic() - tick))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)


def _on_signal(callback: Any) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, callback)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    _on_signal(stop.set)
    await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    roles = parser.add_subparsers(dest="role", required=True)
    backend = roles.add_parser("backend")
    backend.add_argument("--listen", default="0.0.0.0:9090")
    backend.add_argument("--delay-ms", type=float, default=0.0)
    backend.add_argument("--failure-rate", type=float, default=0.0)
    front = roles.add_parser("web")
    front.add_argument("--listen", default="0.0.0.0:8080")
    front.add_argument("--slow", required=True)
    front.add_argument("--flaky", required=True)
    traffic = roles.add_parser("traffic")
    traffic.add_argument("--target", required=True)
    traffic.add_argument("--rps", type=float, default=20.0)
    traffic.add_argument("--max-seconds", type=float, default=3600.0)
    traffic.add_argument("--max-requests", type=int, default=200_000)
    args = parser.parse_args()
    runner = {"backend": run_backend, "web": run_web, "traffic": run_traffic}[args.role]
    asyncio.run(runner(args))


if __name__ == "__main__":
    sys.exit(main())
