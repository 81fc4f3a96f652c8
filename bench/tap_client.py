"""``python -m bench.tap_client``: one tap on a proxy, observing every request, counting events.

What ``gossamer viz tap`` does against one proxy, without the tap service in between: it
speaks ``io.linkerd.proxy.tap.Tap/Observe`` over mTLS (TLS 1.3, ALPN h2) with the tap
identity's certificate, asks for every request (no match, the largest limit) and counts the
events by kind. It prints ``tapping`` once the proxy has accepted the call. On SIGTERM it
keeps reading until the stream has been quiet for a moment (events of the last requests may
still be queued in the proxy), bounded, then prints one JSON line of counts and exits.

A stream that ends or fails while the load runs is reported in ``error``; the proxy may drop
events a slow client cannot take (its tap queue is bounded), which shows as fewer events.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import signal
import ssl
import sys
import time

from gossamer_api.proxy import tap_pb2
from gossamer_api.proxy.tap_grpc import TapStub
from grpclib.client import Channel, Stream
from grpclib.config import Configuration

#: The proto's limit is a uint32: this many requests is "every request" for a benchmark.
EVERY_REQUEST = 2**32 - 1
#: After SIGTERM: the stream counts as drained once no event came for this long ...
QUIET = 0.5
#: ... or this long has passed.
MAX_DRAIN = 3.0


def _tls(ca: str, cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["h2"])
    context.load_cert_chain(cert, key)
    return context


async def observe(args: argparse.Namespace) -> dict[str, object]:
    counts: collections.Counter[str] = collections.Counter()
    last_event = time.monotonic()
    error: str | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    channel = Channel(
        "127.0.0.1",
        args.port,
        ssl=_tls(args.ca, args.cert, args.key),
        config=Configuration(ssl_target_name_override=args.server_name),
    )

    async def read(stream: Stream[tap_pb2.ObserveRequest, tap_pb2.TapEvent]) -> None:
        nonlocal last_event
        while (event := await stream.recv_message()) is not None:
            counts[event.http.WhichOneof("event") or "other"] += 1
            last_event = time.monotonic()

    try:
        async with TapStub(channel).Observe.open() as stream:
            await stream.send_message(tap_pb2.ObserveRequest(limit=EVERY_REQUEST), end=True)
            await stream.recv_initial_metadata()
            print("tapping", flush=True)
            reader = asyncio.ensure_future(read(stream))
            waiter = asyncio.ensure_future(stop.wait())
            await asyncio.wait((reader, waiter), return_when=asyncio.FIRST_COMPLETED)
            if reader.done():
                waiter.cancel()
                reader.result()  # raises what broke the stream
                error = "the proxy ended the stream while tapping"
            else:
                deadline = time.monotonic() + MAX_DRAIN
                while not reader.done() and time.monotonic() < deadline:
                    if time.monotonic() - last_event >= QUIET:
                        break
                    await asyncio.sleep(0.05)
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                await stream.cancel()
    except Exception as exc:  # reported, not raised: the bench records a broken tap
        error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        channel.close()
    return {"events": sum(counts.values()), **counts, "error": error}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tap_client", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="the proxy's control port")
    parser.add_argument("--server-name", required=True, help="the proxy's identity (SNI)")
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    result = asyncio.run(observe(args))
    print("TAPJSON " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
