"""How long a change takes to reach many open ``Get`` streams, with the real apiserver.

Starts the local test cluster (etcd, kube-apiserver, controller-manager, kwok), the destination
service as its own process on loopback, a selector-less Service whose EndpointSlices (written
by this benchmark) hold ``--endpoints`` addresses, and opens ``--streams`` ``Get`` streams on it.
Each iteration rewrites one EndpointSlice (taking one address out, or putting it back) and
measures from just before the write until the *last* stream has received the resulting update.

    python -m bench.destination_bench [--streams 1000] [--endpoints 1000] [--iterations 40]



"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import datetime as dt
import ipaddress
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from gossamer_api.proxy import destination_pb2, destination_pb2_grpc
from gossamer_destination.testing_cluster import DestinationProcess, apply_crds
from gossamer_kube.client import KubeClient
from gossamer_kube.config import KubeConfig
from gossamer_kube.resources import ENDPOINTSLICES, NAMESPACES, SERVICES
from gossamer_kube.testing.cluster import KubeTestCluster

CLK_TCK = os.sysconf("SC_CLK_TCK")

NAMESPACE = "destination-bench"
SLICE_SIZE = 100
STREAMS_PER_CHANNEL = 100
RESULTS = Path(__file__).resolve().parent / "results" / "destination.json"


def slices_for(endpoints: int) -> list[dict[str, Any]]:
    base = int(ipaddress.ip_address("10.200.0.1"))
    out = []
    for start in range(0, endpoints, SLICE_SIZE):
        count = min(SLICE_SIZE, endpoints - start)
        out.append(
            {
                "metadata": {
                    "name": f"web-{start // SLICE_SIZE}",
                    "labels": {
                        "kubernetes.io/service-name": "web",
                        "endpointslice.kubernetes.io/managed-by": "destination-bench",
                    },
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [
                    {
                        "addresses": [str(ipaddress.ip_address(base + start + i))],
                        "conditions": {"ready": True},
                    }
                    for i in range(count)
                ],
            }
        )
    return out


class Streams:
    """Many Get streams; records when each received its latest message."""

    def __init__(self, targets: list[grpc.aio.Channel], count: int, path: str) -> None:
        self.calls = [
            destination_pb2_grpc.DestinationStub(targets[i // STREAMS_PER_CHANNEL]).Get(
                destination_pb2.GetDestination(path=path)
            )
            for i in range(count)
        ]
        self.received = [0] * count
        self.last_at = [0.0] * count
        #: When the first stream received its n-th message (where the destination's part ends
        #: and the client's reading of 1,000 streams begins).
        self.first_at: dict[int, float] = {}
        self.errors: list[str] = []
        self.progress = asyncio.Event()
        self._tasks = [asyncio.create_task(self._read(i)) for i in range(count)]

    async def _read(self, i: int) -> None:
        call = self.calls[i]
        try:
            while True:
                msg = await call.read()
                if msg is grpc.aio.EOF:  # type: ignore[attr-defined]
                    self.errors.append(f"stream {i} ended")
                    return
                self.received[i] += 1
                self.last_at[i] = now = time.perf_counter()
                self.first_at.setdefault(self.received[i], now)
                self.progress.set()
        except grpc.aio.AioRpcError as exc:
            self.errors.append(f"stream {i}: {exc.code().name} {exc.details()}")
        except asyncio.CancelledError:
            pass

    async def wait_all(self, at_least: int, deadline: float) -> None:
        while min(self.received) < at_least:
            if self.errors:
                raise RuntimeError(self.errors[0])
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                behind = sum(1 for r in self.received if r < at_least)
                raise TimeoutError(f"{behind} streams did not get message {at_least}")
            self.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), remaining)

    async def close(self) -> None:
        for call in self.calls:
            call.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def run(args: argparse.Namespace, cluster: KubeTestCluster, workdir: Path) -> dict[str, Any]:
    apply_crds(cluster.admin())
    async with KubeClient(KubeConfig.from_kubeconfig(cluster.kubeconfig)) as client:
        await client.create(NAMESPACES, {"metadata": {"name": NAMESPACE}})
        await client.create(
            SERVICES,
            {"metadata": {"name": "web"}, "spec": {"ports": [{"name": "http", "port": 80}]}},
            NAMESPACE,
        )
        slices = slices_for(args.endpoints)
        for es in slices:
            await client.create(ENDPOINTSLICES, es, NAMESPACE)
        dst = DestinationProcess(cluster.kubeconfig, workdir / "destination.log")
        try:
            await asyncio.to_thread(dst.wait_ready, 120.0)
            channels = [
                grpc.aio.insecure_channel(
                    dst.target, options=[("grpc.max_receive_message_length", 64 << 20)]
                )
                for _ in range(-(-args.streams // STREAMS_PER_CHANNEL))
            ]
            path = f"web.{NAMESPACE}.svc.cluster.local:80"
            started = time.perf_counter()
            streams = Streams(channels, args.streams, path)
            await streams.wait_all(1, started + 300)
            subscribe_s = time.perf_counter() - started
            rss_after_subscribe = dst.rss_bytes()

            target = copy.deepcopy(slices[0])
            full = copy.deepcopy(target["endpoints"])
            latencies: list[float] = []
            first_latencies: list[float] = []
            cpu_per_change: list[float] = []
            give_up = time.monotonic() + args.seconds
            for i in range(args.iterations + args.warmup):
                if time.monotonic() > give_up:
                    break
                expected = min(streams.received) + 1
                current = await client.get(ENDPOINTSLICES, target["metadata"]["name"], NAMESPACE)
                current["endpoints"] = full[:-1] if i % 2 == 0 else full
                cpu0 = cpu_seconds(dst.proc.pid)
                t0 = time.perf_counter()
                await client.replace(ENDPOINTSLICES, target["metadata"]["name"], current, NAMESPACE)
                await streams.wait_all(expected, t0 + 30)
                if i >= args.warmup:
                    latencies.append(max(streams.last_at) - t0)
                    first_latencies.append(streams.first_at[expected] - t0)
                    cpu_per_change.append(cpu_seconds(dst.proc.pid) - cpu0)
            rss = dst.rss_bytes()
            await streams.close()
            for ch in channels:
                await ch.close(None)
        finally:
            dst.stop()
    ms = [x * 1000 for x in latencies]
    first_ms = [x * 1000 for x in first_latencies]
    return {
        "benchmark": "destination_get_fanout",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "streams": args.streams,
        "endpoints": args.endpoints,
        "iterations": len(ms),
        "subscribe_all_seconds": round(subscribe_s, 3),
        "change_to_last_stream_ms": {
            "median": round(statistics.median(ms), 2),
            "p99": round(percentile(ms, 0.99), 2),
            "max": round(max(ms), 2),
            "min": round(min(ms), 2),
        },
        "change_to_first_stream_ms": {
            "median": round(statistics.median(first_ms), 2),
            "p99": round(percentile(first_ms, 0.99), 2),
        },
        # CPU time of the destination process from the write until the last stream had the
        # update (clock ticks, so single values are 10 ms steps: read the mean).
        "destination_cpu_ms_per_change": round(statistics.mean(cpu_per_change) * 1000, 2),
        "destination_rss_mib": round(rss / 2**20, 1),
        "destination_rss_after_subscribe_mib": round(rss_after_subscribe / 2**20, 1),
        "target_p99_ms": 200,
    }


def measure(
    cluster: KubeTestCluster,
    workdir: Path,
    *,
    streams: int = 1000,
    endpoints: int = 1000,
    iterations: int = 40,
    warmup: int = 3,
    seconds: float = 180.0,
) -> dict[str, Any]:
    """Run the fan-out benchmark against a started ``cluster``; the result summary."""
    params = argparse.Namespace(
        streams=streams, endpoints=endpoints, iterations=iterations, warmup=warmup, seconds=seconds
    )
    return asyncio.run(run(params, cluster, workdir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=180.0, help="wall-clock limit")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="destination-bench-") as tmp:
        cluster = KubeTestCluster()
        cluster.start()
        try:
            result = measure(
                cluster, Path(tmp), streams=args.streams, endpoints=args.endpoints,
                iterations=args.iterations, warmup=args.warmup, seconds=args.seconds,
            )  # fmt: skip
        finally:
            cluster.stop()
    line = json.dumps(result)
    print(line)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
