"""The end-to-end suite's client: a bounded burst of HTTP requests, summarised as one JSON line.

    python loadgen.py --url http://echo.ns.svc.cluster.local:8080/ --count 600 \
        [--concurrency 8] [--rps 100] [--max-seconds 30] [--body MARKER] [--events]

Runs inside a meshed pod's network namespace (as a uid that iptables hands to the pod's
proxy), so every request crosses the client's outbound proxy and the server's inbound proxy.
It stops at ``--count`` requests or after ``--max-seconds``, whichever comes first, so no
run is unbounded; SIGTERM stops it early (in-flight requests finish) and it still reports.
The summary counts statuses, transport errors, and answers per ``x-pod`` and ``x-version``;
``--events`` adds ``[unix_time, pod, status]`` per request, so a test can tell what happened
before and after a change it made (the clock is the host's). A transport error counts as
status 0 with its exception type in ``errors``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import signal
import time
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector


async def run(args: argparse.Namespace) -> dict[str, Any]:
    statuses: collections.Counter[int] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    pods: collections.Counter[str] = collections.Counter()
    versions: collections.Counter[str] = collections.Counter()
    bodies_with_marker = 0
    events: list[tuple[float, str, int]] = []
    started = time.monotonic()
    deadline = started + args.max_seconds
    interval = args.concurrency / args.rps if args.rps > 0 else 0.0
    issued = 0
    headers = dict(h.split(":", 1) for h in args.header)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def worker(session: ClientSession) -> None:
        nonlocal issued, bodies_with_marker
        while issued < args.count and time.monotonic() < deadline and not stop.is_set():
            issued += 1
            tick = time.monotonic()
            pod, status = "", 0
            try:
                async with session.request(
                    args.method, args.url, data=args.body.encode() or None, headers=headers
                ) as response:
                    text = await response.text()
                    status = response.status
                    pod = response.headers.get("x-pod", "")
                    versions[response.headers.get("x-version", "")] += 1
                    if args.body and args.body in text:
                        bodies_with_marker += 1
            except (ClientError, TimeoutError, OSError) as exc:
                errors[type(exc).__name__] += 1
            statuses[status] += 1
            pods[pod] += 1
            if args.events:
                events.append((round(time.time(), 3), pod, status))
            pause = interval - (time.monotonic() - tick)
            if pause > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)

    connector = TCPConnector(limit=args.concurrency, force_close=args.no_keepalive)
    timeout = ClientTimeout(total=args.timeout)
    async with ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(args.concurrency)))
    summary: dict[str, Any] = {
        "sent": sum(statuses.values()),
        "ok": statuses.get(200, 0),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors),
        "pods": {k: v for k, v in pods.items() if k},
        "versions": {k: v for k, v in versions.items() if k},
        "echoed_marker": bodies_with_marker,
        "seconds": round(time.monotonic() - started, 3),
    }
    if args.events:
        summary["events"] = events
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--rps", type=float, default=0.0, help="overall pace; 0 = as fast as it can"
    )
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=10.0, help="per request")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default="")
    parser.add_argument("--header", action="append", default=[], help="name:value")
    parser.add_argument("--events", action="store_true")
    parser.add_argument("--no-keepalive", action="store_true")
    args = parser.parse_args()
    if args.count < 1 or args.concurrency < 1 or args.max_seconds <= 0:
        raise SystemExit("--count and --concurrency must be positive, --max-seconds above 0")
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
