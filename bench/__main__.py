"""``make bench``: direct, Gossamer and Envoy side by side, in one run, as ratios.

Proxies and backends are pinned to CPU 0 and the load generator to CPU 1. Results go to
bench/results/: report.md, results.json and one PNG per topology.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import loadgen, report
from bench.backends import grpc_body
from bench.certs import make_mesh_certs
from bench.procs import ProcGroup, cpu_seconds, peak_rss_mb, process_group
from bench.profile import profile_two_hop
from bench.topologies import TOPOLOGIES, Topology, start_backend, workdir_for

RESULTS = Path(__file__).parent / "results"
CONNECTIONS = (1, 16, 64)


def measure(
    topology: Topology, target: str, root: Path, args: argparse.Namespace
) -> report.TargetResult:
    result = report.TargetResult(topology.name, target)
    workdir = workdir_for(root, topology, target)
    certs = make_mesh_certs(workdir)
    with process_group(workdir) as group:
        try:
            backend_port = start_backend(topology.backend, group)
            port = topology.targets[target](group, backend_port, certs)
            group.check_alive()
            if topology.backend == "iperf3":
                _bulk(result, group, port, args)
            else:
                _requests(result, topology, group, port, workdir, args)
            group.check_alive()
            result.peak_rss_mb = {p.name: peak_rss_mb(p.pid) for p in group.measured()}
        except Exception as exc:  # a failing target is reported, and the others still run
            result.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            print(f"  {target}: {result.error}", file=sys.stderr)
    return result


def _load(
    topology: Topology, port: int, workdir: Path, c: int, seconds: float
) -> loadgen.LoadResult:
    if topology.backend == "grpc":
        url = f"http://127.0.0.1:{port}/bench.Echo/Unary"
        return loadgen.h2load_grpc(url, grpc_body(workdir), c, seconds)
    return loadgen.wrk(f"http://127.0.0.1:{port}/", c, seconds)


def _requests(
    result: report.TargetResult,
    topology: Topology,
    group: ProcGroup,
    port: int,
    workdir: Path,
    args: argparse.Namespace,
) -> None:
    _load(topology, port, workdir, 64, args.warmup)  # fills pools, warms TLS sessions
    for c in CONNECTIONS:
        before = sum(cpu_seconds(p.pid) for p in group.measured())
        run = _load(topology, port, workdir, c, args.seconds)
        spent = sum(cpu_seconds(p.pid) for p in group.measured()) - before
        result.runs[c] = run
        if c == 64 and run.requests and group.measured():
            result.cpu_seconds_per_10k = spent / run.requests * 10_000
        print(
            f"  {topology.name:10} {result.target:8} c={c:<3} {run.rps:>10,.0f} rps "
            f"p50 {run.p50_us:>7.0f}µs p99 {run.p99_us:>7.0f}µs errors {run.errors}",
            file=sys.stderr,
        )


def _bulk(
    result: report.TargetResult, group: ProcGroup, port: int, args: argparse.Namespace
) -> None:
    before = sum(cpu_seconds(p.pid) for p in group.measured())
    result.gbytes_per_second = loadgen.iperf3(port, args.seconds)
    spent = sum(cpu_seconds(p.pid) for p in group.measured()) - before
    moved = result.gbytes_per_second * args.seconds
    if group.measured() and moved:
        result.cpu_seconds_per_10k = spent / moved  # CPU seconds per GB for this topology
    print(f"  tcp        {result.target:8} {result.gbytes_per_second:.2f} GB/s", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measured row")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up before each target")
    parser.add_argument("--only", nargs="*", help="topologies to run (default: all)")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    args = parser.parse_args()
    for tool in ("wrk", "h2load", "iperf3", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is missing (make bench installs it)", file=sys.stderr)
            return 2
    RESULTS.mkdir(exist_ok=True)
    started = time.monotonic()
    results: list[report.TargetResult] = []
    chosen = [t for t in TOPOLOGIES if not args.only or t.name in args.only]
    with tempfile.TemporaryDirectory(prefix="gossamer-bench-") as tmp:
        root = Path(tmp)
        for topology in chosen:
            print(f"{topology.title}", file=sys.stderr)
            for target in topology.targets:
                results.append(measure(topology, target, root, args))
        profile = None if args.no_profile else profile_two_hop(root, args.seconds)
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": "proxies and backends on CPU 0, load generator on CPU 1",
        "seconds per row": args.seconds,
        "envoy": subprocess.run(["envoy", "--version"], capture_output=True, text=True)
        .stdout.strip()
        .split()[-1],
        "wall time": f"{time.monotonic() - started:.0f}s",
    }
    titles = {t.name: t.title for t in chosen}
    text = report.markdown(results, titles, meta)
    if profile:
        text += (
            "\n## Where the proxy spends its time (two-hop HTTP/1.1, py-spy)\n\n" + profile + "\n"
        )
    (RESULTS / "report.md").write_text(text)
    report.write_json(results, meta, RESULTS / "results.json")
    report.plots(results, titles, RESULTS)
    print(text)
    print(f"written: {RESULTS}/report.md, results.json, *.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
