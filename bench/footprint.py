"""Gossamer's proxy footprint per topology: peak RSS and CPU per request at a fixed count.

``uv run --frozen python -m bench.footprint [--requests N] [--only http1 grpc-mtls]``

Unlike ``make bench``, nothing here depends on wall-clock throughput, so it gives stable
figures on a busy machine: each topology gets a warm-up and then exactly ``--requests``
requests at c=64 (``h2load``, HTTP/1.1 or gRPC), and the proxies' CPU time (utime + stime
from /proc) is divided by that count. Peak RSS is VmHWM of each proxy process.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.backends import grpc_body
from bench.bytecode import compile_bytecode
from bench.certs import make_mesh_certs
from bench.procs import PINNED, Placement, cpu_seconds, peak_rss_mb, process_group, process_tree
from bench.topologies import TOPOLOGIES, start_backend, workdir_for


def _current_rss_of(pid: int) -> float:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:  # exited since the tree was read
        return 0.0
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def current_rss_mb(pid: int) -> float:
    """RSS now of ``pid`` and of its workers, summed."""
    return sum(_current_rss_of(p) for p in process_tree(pid))


def h2load(
    port: int, requests: int, *, grpc_body_file: Path | None, placement: Placement = PINNED
) -> int:
    """Send exactly ``requests`` requests at c=64; returns how many succeeded."""
    argv = [*placement.prefix(load=True), "h2load", "-t1", "-c64", f"-n{requests}"]
    if grpc_body_file is None:
        argv += ["--h1", f"http://127.0.0.1:{port}/"]
    else:
        argv += [
            "-m10",
            "-d",
            str(grpc_body_file),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            f"http://127.0.0.1:{port}/bench.Echo/Unary",
        ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True).stdout
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    if done is None:
        raise RuntimeError(f"h2load output not understood:\n{out}")
    return int(done.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--only", nargs="*", default=["http1", "http1-mtls", "grpc-mtls"])
    args = parser.parse_args()
    compile_bytecode(sys.executable)  # measured as shipped: from bytecode (bench.bytecode)
    with tempfile.TemporaryDirectory(prefix="gossamer-footprint-") as tmp:
        for topology in TOPOLOGIES:
            if topology.name not in args.only:
                continue
            workdir = workdir_for(Path(tmp), topology, "gossamer")
            certs = make_mesh_certs(workdir)
            body = grpc_body(workdir) if topology.backend == "grpc" else None
            with process_group(workdir, topology.placement) as group:
                backend_port = start_backend(topology.backend, group)
                port = topology.builders()["gossamer"](group, backend_port, certs)
                idle = {p.name: current_rss_mb(p.pid) for p in group.measured()}
                warmup = max(args.requests // 10, 1000)
                h2load(port, warmup, grpc_body_file=body, placement=topology.placement)
                before = {p.name: cpu_seconds(p.pid) for p in group.measured()}
                ok = h2load(port, args.requests, grpc_body_file=body, placement=topology.placement)
                group.check_alive()
                for p in group.measured():
                    cpu_us = (cpu_seconds(p.pid) - before[p.name]) / args.requests * 1e6
                    print(
                        f"{topology.name:11} {p.name:18} idle RSS {idle[p.name]:5.1f} MB  "
                        f"peak RSS {peak_rss_mb(p.pid):5.1f} MB  "
                        f"CPU {cpu_us:6.1f} µs/request  ({ok}/{args.requests} ok)"
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
