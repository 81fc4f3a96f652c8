"""The end-to-end suite's backend: an HTTP server that says which pod and version answered.

    python echo.py --listen 0.0.0.0:8080 [--delay-ms 200] [--failure-rate 0.3] [--version v2]
                   [--drain-ms 2000] [--tcp-listen 0.0.0.0:9000]
                   [--grpc-listen 0.0.0.0:9090] [--grpc-unavailable-rate 0.3]

Every HTTP request (any method, any path) gets ``x-pod`` (env ``POD_NAME``) and ``x-version``
headers and a JSON body ``{"pod", "version", "path", "body"}`` that echoes the request body,
so a client counts per pod and per version from the responses alone. ``--failure-rate`` makes
that share of requests answer 500 (still with ``x-pod``), ``--delay-ms`` delays every answer.
``GET /ready`` always answers 200 at once (readiness probes stay out of the numbers).
Each flag also reads an environment variable (``DELAY_MS``, ``FAILURE_RATE``, ``VERSION``,
``DRAIN_MS``), so a Deployment's env change rolls out new behaviour.

On SIGTERM the server keeps answering for ``--drain-ms`` before it exits, as a well-behaved
app does while the endpoint removal reaches its clients. ``--tcp-listen`` adds a raw TCP echo
(for opaque traffic). ``--grpc-listen`` adds a gRPC server whose every unary method
(``/echo.Echo/Say`` and any other) answers the request bytes prefixed with the pod name, or,
for ``--grpc-unavailable-rate`` of the calls, fails with status UNAVAILABLE (env
``GRPC_UNAVAILABLE_RATE``). It needs only the standard library, aiohttp and grpcio (the
runtime venv's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket

from aiohttp import web


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class Echo:
    """The request handler: identity headers, optional delay, optional 500s."""

    def __init__(self, pod: str, version: str, delay_ms: float, failure_rate: float) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise SystemExit(f"--failure-rate must be within 0..1, got {failure_rate}")
        if delay_ms < 0:
            raise SystemExit(f"--delay-ms must not be negative, got {delay_ms}")
        self.pod = pod
        self.version = version
        self.delay = delay_ms / 1000
        self.failure_rate = failure_rate
        self.served = 0

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(text="ready\n")

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.served += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        failed = self.failure_rate > 0 and random.random() < self.failure_rate
        payload = {
            "pod": self.pod,
            "version": self.version,
            "path": request.path_qs,
            "body": body.decode("utf-8", "replace"),
            "client_id": request.headers.get("l5d-client-id", ""),
            "traceparent": request.headers.get("traceparent", ""),
            "served": self.served,
        }
        return web.Response(
            status=500 if failed else 200,
            text=json.dumps(payload) + "\n",
            content_type="application/json",
            headers={"x-pod": self.pod, "x-version": self.version},
        )


async def _tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _grpc_server(addr: str, pod: str, unavailable_rate: float) -> object:
    """A gRPC server (bytes in, bytes out) failing ``unavailable_rate`` of calls."""
    import grpc

    if not 0.0 <= unavailable_rate <= 1.0:
        raise SystemExit(f"--grpc-unavailable-rate must be within 0..1, got {unavailable_rate}")

    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if unavailable_rate > 0 and random.random() < unavailable_rate:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{pod} is flaky")
        return pod.encode() + b" " + request

    class AnyMethod(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(unary)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((AnyMethod(),))
    server.add_insecure_port(addr)
    await server.start()
    return server


async def serve(args: argparse.Namespace) -> None:
    echo = Echo(
        os.environ.get("POD_NAME", socket.gethostname()),
        args.version,
        args.delay_ms,
        args.failure_rate,
    )
    app = web.Application()
    app.router.add_get("/ready", echo.ready)
    app.router.add_route("*", "/{tail:.*}", echo.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    host, port = _split(args.listen)
    await web.TCPSite(runner, host, port).start()
    tcp = None
    if args.tcp_listen:
        tcp_host, tcp_port = _split(args.tcp_listen)
        tcp = await asyncio.start_server(_tcp_echo, tcp_host, tcp_port)
    grpc_server = None
    if args.grpc_listen:
        grpc_server = await _grpc_server(args.grpc_listen, echo.pod, args.grpc_unavailable_rate)
    print(f"echo {echo.pod} {echo.version} listening on {args.listen}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Keep answering while clients learn that this endpoint is going away.
    await asyncio.sleep(args.drain_ms / 1000)
    if tcp is not None:
        tcp.close()
    if grpc_server is not None:
        await grpc_server.stop(1.0)  # type: ignore[attr-defined]
    await runner.cleanup()
    print(f"echo {echo.pod} served {echo.served} requests; bye", flush=True)


def main() -> None:
    env = os.environ
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen", default="0.0.0.0:8080")
    parser.add_argument("--tcp-listen", default="")
    parser.add_argument("--delay-ms", type=float, default=float(env.get("DELAY_MS", "0")))
    parser.add_argument("--failure-rate", type=float, default=float(env.get("FAILURE_RATE", "0")))
    parser.add_argument("--version", default=env.get("VERSION", "v1"))
    parser.add_argument("--grpc-listen", default="")
    parser.add_argument(
        "--grpc-unavailable-rate",
        type=float,
        default=float(env.get("GRPC_UNAVAILABLE_RATE", "0")),
    )
    parser.add_argument("--drain-ms", type=float, default=float(env.get("DRAIN_MS", "0")))
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
