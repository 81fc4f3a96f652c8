"""Instructions per request, counted by callgrind: a side-by-side figure a busy machine cannot skew.

``make bench``'s timed figures (rps, p99, CPU seconds) move with whatever else the machine
runs: on a shared 2-core host two runs minutes apart can differ by more than the regression
being looked for. The number of instructions the proxy executes per request does not. Here
each target's proxies run under valgrind's callgrind; after a warm-up their counters are
zeroed, a fixed number of requests goes through one keep-alive connection (c=1, so nothing
depends on timing), and the counters are dumped and summed over the target's processes.

    python -m bench.instructions --baseline-rev e01e59f --only http1 http1-mtls grpc-mtls

HTTP/1.1 requests run one at a time: the figure is the proxy's own cost per request
(parsing, routing, metrics, TLS records), not batching under load. ``grpc-mtls`` sends gRPC
unary calls to the bench's grpcio echo server over one HTTP/2 connection, ``--streams`` of
them at once (a batch is sent, then all its answers are read, so the batching does not
depend on timing either). Kernel time is not counted.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import backends, grpc_client
from bench.baseline import BaselineError, build_baseline
from bench.certs import make_mesh_certs
from bench.gossamer import start_pair, start_proxy
from bench.procs import ProcGroup, process_group

__all__ = [
    "Count",
    "callgrind_total",
    "main",
    "ratio_line",
    "send_requests",
]

#: A proxy under valgrind starts 20-50 times slower; on a busy machine that is minutes.
START_TIMEOUT = 600.0
#: Requests before the counters are zeroed (connections pooled, caches and lazy imports warm).
WARMUP_REQUESTS = 200
#: One response head or body larger than this is not the bench backend's answer.
MAX_RESPONSE = 1 << 20
#: Under valgrind a connect (and an mTLS handshake with a proxy also under valgrind) takes
#: seconds: the proxies' connect timeouts are raised so the warm-up's first connects land.
SLOW_PROXY_ENV = {
    "LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT": "60s",
    "LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT": "60s",
}

_SUMMARY = re.compile(rb"^summary:\s*(\d+)\s*$", re.M)
_CONTENT_LENGTH = re.compile(rb"^content-length:\s*(\d+)\s*$", re.M | re.I)


def callgrind_total(path: Path) -> int:
    """The instruction count (``summary:`` line) of one callgrind dump."""
    match = _SUMMARY.search(path.read_bytes())
    if match is None:
        raise ValueError(f"{path}: no 'summary:' line (not a callgrind dump?)")
    return int(match.group(1))


def send_requests(port: int, count: int, *, timeout: float = 120.0) -> None:
    """``count`` GET requests, one after another, over one keep-alive connection.

    Every response must be a 200 with a Content-Length body (what the bench's nginx backend
    answers); anything else stops the measurement with an error rather than count it.
    """
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = b""
        for _ in range(count):
            sock.sendall(request)
            pending = _read_response(sock, pending)


def _read_response(sock: socket.socket, buffered: bytes) -> bytes:
    """Read one response; returns whatever came after it."""
    data = buffered
    while (end := data.find(b"\r\n\r\n")) < 0:
        data = _more(sock, data)
    head = data[:end]
    if not head.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 ")):
        raise RuntimeError(f"unexpected response: {head[:200]!r}")
    length = _CONTENT_LENGTH.search(head)
    if length is None:
        raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
    size = end + 4 + int(length.group(1))
    while len(data) < size:
        data = _more(sock, data)
    return data[size:]


def _more(sock: socket.socket, data: bytes) -> bytes:
    if len(data) > MAX_RESPONSE:
        raise RuntimeError("response larger than the bench backend's")
    try:
        chunk = sock.recv(65536)
    except ConnectionResetError:
        chunk = b""
    if not chunk:
        raise RuntimeError("connection closed before the response ended")
    return data + chunk


@dataclass(frozen=True)
class Count:
    """One target's instructions over ``requests`` requests, summed over its proxies."""

    topology: str
    target: str
    requests: int
    instructions: int

    @property
    def per_request(self) -> float:
        return self.instructions / self.requests


def ratio_line(mine: Count, reference: Count) -> str:
    """One Markdown row comparing two targets of one topology."""
    ratio = mine.per_request / reference.per_request
    return (
        f"| {mine.topology} | {mine.per_request:,.0f} | {reference.per_request:,.0f} "
        f"| {ratio:.3f}x ({(ratio - 1) * 100:+.1f}%) |"
    )


def _callgrind_python(workdir: Path, python: str, tag: str) -> tuple[str, Path]:
    """A stand-in interpreter that runs ``python`` under callgrind (the bench starts
    ``<python> -m gossamer_proxy``); returns it and the directory its dumps land in."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind is missing (apt-get install valgrind)")
    dumps = workdir / f"callgrind-{tag}"
    dumps.mkdir(parents=True, exist_ok=True)
    wrapper = workdir / f"python-under-callgrind-{tag}"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'exec "{valgrind}" --tool=callgrind --callgrind-out-file="{dumps}/cg.%p" '
        f'"{python}" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper), dumps


def _control(option: str, pid: int) -> None:
    subprocess.run(
        ["callgrind_control", option, str(pid)],
        check=True,
        capture_output=True,
        timeout=120,
    )


Starter = Callable[[ProcGroup, int, Path, str], int]


def _one_hop(group: ProcGroup, backend: int, workdir: Path, python: str) -> int:
    return start_proxy(group, "gossamer", backend, python=python, timeout=START_TIMEOUT)


def _two_hops(group: ProcGroup, backend: int, workdir: Path, python: str) -> int:
    certs = make_mesh_certs(workdir)
    return start_pair(group, backend, certs, python=python, timeout=START_TIMEOUT)


TOPOLOGIES: dict[str, Starter] = {
    "http1": _one_hop,
    "http1-mtls": _two_hops,
    "grpc-mtls": _two_hops,
}
#: Topologies whose backend is the grpcio echo server (the others: nginx).
GRPC = frozenset({"grpc-mtls"})


class _Http1Load:
    def __init__(self, port: int) -> None:
        self.port = port

    def send(self, count: int) -> None:
        send_requests(self.port, count)

    def close(self) -> None:
        pass


def measure(
    topology: str, target: str, python: str, requests: int, workdir: Path, streams: int = 1
) -> Count:
    """Start ``topology`` with ``python``'s proxy under callgrind and count one run.

    The gRPC client keeps its one connection from the warm-up through the measured run, so
    the count holds no connection set-up (the proxies' mTLS handshake included).
    """
    home = workdir / topology / target
    home.mkdir(parents=True, exist_ok=True)
    wrapper, dumps = _callgrind_python(home, python, target)
    with process_group(home) as group:
        grpc = topology in GRPC
        backend = backends.start_grpc_server(group) if grpc else backends.start_nginx(group)
        port = TOPOLOGIES[topology](group, backend, home, wrapper)
        proxies = group.measured()
        load: _Http1Load | grpc_client.UnaryClient = (
            grpc_client.UnaryClient(port, streams=streams, timeout=START_TIMEOUT)
            if grpc
            else _Http1Load(port)
        )
        try:
            load.send(WARMUP_REQUESTS)
            for proc in proxies:
                _control("-z", proc.pid)
            load.send(requests)
            for proc in proxies:
                _control("-d", proc.pid)
        finally:
            load.close()
        group.check_alive()
        totals = [callgrind_total(_last_dump(dumps, proc.pid)) for proc in proxies]
    return Count(topology, target, requests, sum(totals))


def _last_dump(dumps: Path, pid: int) -> Path:
    found = sorted(dumps.glob(f"cg.{pid}.*"), key=lambda p: int(p.suffix[1:]))
    if not found:
        raise RuntimeError(f"callgrind wrote no dump for pid {pid} in {dumps}")
    return found[-1]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--baseline-rev", metavar="REV", help="e.g. e01e59f")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="count this tree's proxy alone (no --baseline-rev needed)",
    )
    parser.add_argument("--only", nargs="*", choices=sorted(TOPOLOGIES), default=sorted(TOPOLOGIES))
    parser.add_argument("--requests", type=int, default=2000, help="measured requests")
    parser.add_argument(
        "--streams", type=int, default=10, help="gRPC calls in flight at once (grpc-mtls)"
    )
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="keep the callgrind dumps under DIR"
    )
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    if args.streams < 1:
        parser.error("--streams must be at least 1")
    if args.baseline_rev is None and not args.no_baseline:
        parser.error("--baseline-rev REV or --no-baseline")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    baseline = None
    if not args.no_baseline:
        try:
            baseline = build_baseline(args.baseline_rev)
        except BaselineError as exc:
            print(f"bench.instructions: {exc}", file=sys.stderr)
            return 2
        print(
            f"| topology | gossamer instr/request | {baseline.label} instr/request | ratio |\n"
            "|---|---|---|---|"
        )
    else:
        print("| topology | gossamer instr/request |\n|---|---|")
    os.environ.update(SLOW_PROXY_ENV)  # the bench's processes inherit the environment
    with tempfile.TemporaryDirectory(prefix="gossamer-instructions-") as tmp:
        workdir = Path(tmp) if args.keep is None else args.keep
        for topology in args.only:
            n, streams = args.requests, args.streams
            mine = measure(topology, "gossamer", sys.executable, n, workdir, streams)
            if baseline is None:
                print(f"| {topology} | {mine.per_request:,.0f} |", flush=True)
                continue
            reference = measure(topology, "baseline", baseline.python, n, workdir, streams)
            print(ratio_line(mine, reference), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
