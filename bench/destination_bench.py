"""How long a change takes to reach many open ``Get`` streams, with the real apiserver.

Starts the local test cluster (etcd, kube-apiserver, controller-manager, kwok), the destination
service as its own process on loopback, a selector-less Service whose EndpointSlices (written
by this benchmark) hold ``--endpoints`` addresses, and opens ``--streams`` ``Get`` streams on it.
Each iteration rewrites one EndpointSlice (taking one address out, or putting it back) and
measures from just before the write until the *last* stream has received the resulting update.

    python -m bench.destination_bench [--streams 1000] [--endpoints 1000] [--iterations 40]
        [--client lean|grpcio]

The streams are read by ``python -m bench.grpc_watch_client`` (``lean``, the default): a
separate process standing in for the proxies, niced once subscribed, which takes each
update's arrival from the kernel's receive timestamp on its socket. ``grpcio`` reads them
with ``grpc.aio`` in this process, as before: its serial per-message cost (about 30 ms of CPU
per change for 1,000 streams, on the same two cores) was counted in the figure, so that the
last stream lagged the first by 50 to 100 ms that no proxy fleet would see.

The destination runs at debug level and logs, per change, when the watch event arrived, when
its refresh started and finished, when the writes had gone to the sockets (after the last
connection's) and the garbage collections in between; ``breakdown_ms`` splits the latency
with them (medians and the slowest change). With 40 changes, p99 is the slowest change.
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
REPO = Path(__file__).resolve().parents[1]


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
    """Many Get streams read with ``grpc.aio`` in this process (``--client grpcio``): each
    message is timed when its stream's task wakes, so the last stream's time includes this
    process's reading of all the others."""

    def __init__(self, targets: list[grpc.aio.Channel], count: int, path: str) -> None:
        self.calls = [
            destination_pb2_grpc.DestinationStub(targets[i // STREAMS_PER_CHANNEL]).Get(
                destination_pb2.GetDestination(path=path)
            )
            for i in range(count)
        ]
        self.received = [0] * count
        self.last_at = [0.0] * count
        self.first_at: dict[int, float] = {}
        self.errors: list[str] = []
        self.progress = asyncio.Event()
        self._tasks = [asyncio.create_task(self._read(i)) for i in range(count)]

    @property
    def reached(self) -> int:
        """The number of messages every stream has received."""
        return min(self.received)

    def last_arrival(self, n: int) -> float:
        return max(self.last_at)

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


class LeanStreams:
    """The same streams read by ``python -m bench.grpc_watch_client`` (``--client lean``).

    A separate, niced process stands in for the proxies: a message counts as received when
    the kernel stamped the segment that completed it on the reader's socket, so the figure is
    when the update reached each client, not when one Python process got round to reading the
    1,000th stream (see that module for why ``grpc.aio`` is not used).
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.reached = 0
        self.first_at: dict[int, float] = {}
        self._last_at: dict[int, float] = {}
        self.errors: list[str] = []
        self.agreement: dict[str, Any] = {}
        self.progress = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._lines: asyncio.Task[None] | None = None

    async def open(self, port: int, path: str) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.grpc_watch_client", "--port", str(port), "--path", path,
            "--streams", str(self.count), "--per-connection", str(STREAMS_PER_CHANNEL),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            cwd=REPO,
        )  # fmt: skip
        self._lines = asyncio.create_task(self._read_lines())

    async def _read_lines(self) -> None:
        assert self._proc is not None
        stdout = self._proc.stdout
        assert stdout is not None
        while line := await stdout.readline():
            report = json.loads(line)
            if "n" in report:
                n = int(report["n"])
                self.first_at[n] = float(report["first"])
                self._last_at[n] = float(report["last"])
                self.reached = max(self.reached, n)
            elif "error" in report:
                self.errors.append(str(report["error"]))
            else:
                self.agreement = report
            self.progress.set()
        self.errors.append("the reader process exited")
        self.progress.set()

    def last_arrival(self, n: int) -> float:
        return self._last_at[n]

    async def wait_all(self, at_least: int, deadline: float) -> None:
        while self.reached < at_least:
            if self.errors:
                raise RuntimeError(self.errors[0])
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"not every stream got message {at_least}")
            self.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), remaining)

    async def close(self) -> None:
        """Ends the reader; raises unless every stream held the same, valid last update."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._lines is not None:
            await self._lines
        if self.agreement.get("distinct_last") != 1 or not self.agreement.get("valid"):
            raise RuntimeError(f"streams disagree on the last update: {self.agreement}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def read_flushes(log_path: Path) -> list[dict[str, Any]]:
    """The destination's ``destination.flush`` debug events (perf_counter stamps, and the
    garbage collections by generation during each), in order."""
    out: list[dict[str, Any]] = []
    for line in log_path.read_text(errors="replace").splitlines():
        if '"destination.flush"' not in line:
            continue
        with contextlib.suppress(ValueError, TypeError):
            event = json.loads(line)
            stamps: dict[str, Any] = {k: float(v) for k, v in event.items() if k.endswith("_at")}
            stamps["collections"] = [int(n) for n in event.get("collections") or ()]
            out.append(stamps)
    return out


def breakdown(
    writes_at: list[float],
    first: list[float],
    last: list[float],
    flushes: list[dict[str, Any]],
) -> dict[str, Any]:
    """Where each change's time went, from the destination's stamps (medians, and the parts
    of the slowest change): the apiserver (write until the destination had the watch event),
    waiting for the refresh, the refresh (diff, encode, one pass over every stream), handing
    the writes to the sockets, then until the first and the last stream had it. Also how
    many changes saw the destination collect garbage, by generation."""
    parts: list[dict[str, float]] = []
    collected: list[list[int]] = []
    for t0, to_first, to_last in zip(writes_at, first, last, strict=True):
        flush = next((f for f in flushes if f["marked_at"] >= t0), None)
        if flush is None:
            continue
        parts.append(
            {
                "apiserver": flush["marked_at"] - t0,
                "queued": flush["started_at"] - flush["marked_at"],
                "refresh": flush["finished_at"] - flush["started_at"],
                "write": flush["written_at"] - flush["finished_at"],
                "to_first_stream": t0 + to_first - flush["written_at"],
                "to_last_stream": t0 + to_last - flush["written_at"],
                "total": to_last,
            }
        )
        collected.append(list(flush.get("collections") or ()))
    if not parts:
        return {}

    def ms(value: float) -> float:
        return round(value * 1000, 2)

    slowest = max(range(len(parts)), key=lambda i: parts[i]["total"])
    generations = max((len(c) for c in collected), default=0)
    return {
        "changes": len(parts),
        "median": {k: ms(statistics.median(p[k] for p in parts)) for k in parts[0]},
        "slowest": {
            **{k: ms(v) for k, v in parts[slowest].items()},
            "collections": collected[slowest],
        },
        "changes_with_collections": [
            sum(1 for c in collected if len(c) > g and c[g]) for g in range(generations)
        ],
    }


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
        log_path = workdir / "destination.log"
        dst = DestinationProcess(cluster.kubeconfig, log_path, {"GOSSAMER_LOG_LEVEL": "debug"})
        try:
            await asyncio.to_thread(dst.wait_ready, 120.0)
            path = f"web.{NAMESPACE}.svc.cluster.local:80"
            started = time.perf_counter()
            channels: list[grpc.aio.Channel] = []
            streams: Streams | LeanStreams
            if args.client == "grpcio":
                channels = [
                    grpc.aio.insecure_channel(
                        dst.target, options=[("grpc.max_receive_message_length", 64 << 20)]
                    )
                    for _ in range(-(-args.streams // STREAMS_PER_CHANNEL))
                ]
                streams = Streams(channels, args.streams, path)
            else:
                streams = LeanStreams(args.streams)
                await streams.open(dst.grpc_port, path)
            await streams.wait_all(1, started + 300)
            subscribe_s = time.perf_counter() - started
            rss_after_subscribe = dst.rss_bytes()

            target = copy.deepcopy(slices[0])
            full = copy.deepcopy(target["endpoints"])
            latencies: list[float] = []
            first_latencies: list[float] = []
            writes_at: list[float] = []
            cpu_per_change: list[float] = []
            give_up = time.monotonic() + args.seconds
            for i in range(args.iterations + args.warmup):
                if time.monotonic() > give_up:
                    break
                expected = streams.reached + 1
                current = await client.get(ENDPOINTSLICES, target["metadata"]["name"], NAMESPACE)
                current["endpoints"] = full[:-1] if i % 2 == 0 else full
                cpu0 = cpu_seconds(dst.proc.pid)
                t0 = time.perf_counter()
                await client.replace(ENDPOINTSLICES, target["metadata"]["name"], current, NAMESPACE)
                await streams.wait_all(expected, t0 + 30)
                if i >= args.warmup:
                    writes_at.append(t0)
                    latencies.append(streams.last_arrival(expected) - t0)
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
    flushes = read_flushes(log_path)
    return {
        "benchmark": "destination_get_fanout",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "client": args.client,
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
        "breakdown_ms": breakdown(writes_at, first_latencies, latencies, flushes),
        # CPU time of the destination process from the write until the last stream had the
        # update (clock ticks, so single values are 10 ms steps: read the mean).
        "destination_cpu_ms_per_change": round(statistics.mean(cpu_per_change) * 1000, 2),
        "destination_rss_mib": round(rss / 2**20, 1),
        "destination_rss_after_subscribe_mib": round(rss_after_subscribe / 2**20, 1),
        "target_p99_ms": 60,
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
    client: str = "lean",
) -> dict[str, Any]:
    """Run the fan-out benchmark against a started ``cluster``; the result summary."""
    params = argparse.Namespace(
        streams=streams,
        endpoints=endpoints,
        iterations=iterations,
        warmup=warmup,
        seconds=seconds,
        client=client,
    )
    return asyncio.run(run(params, cluster, workdir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=180.0, help="wall-clock limit")
    parser.add_argument(
        "--client", choices=("lean", "grpcio"), default="lean", help="how the streams are read"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="destination-bench-") as tmp:
        cluster = KubeTestCluster()
        cluster.start()
        try:
            result = measure(
                cluster, Path(tmp), streams=args.streams, endpoints=args.endpoints,
                iterations=args.iterations, warmup=args.warmup, seconds=args.seconds,
                client=args.client,
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
