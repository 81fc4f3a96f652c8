"""Load generators (wrk, h2load, iperf3) on the load CPU (``placement``), with parsed results.

Every run is bounded in time (``duration``) and only targets loopback ports that
this benchmark opened.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.procs import PINNED, Placement

# wrk reports latency in microseconds; done() prints one JSON line we parse.
WRK_REPORT_LUA = """
done = function(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,'
    .. '"p50":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%f}\\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean))
end
"""


@dataclass(frozen=True)
class LoadResult:
    connections: int
    requests: int
    seconds: float
    errors: int
    rps: float
    p50_us: float
    p99_us: float
    p999_us: float


def _lua_script() -> Path:
    path = Path(tempfile.gettempdir()) / "gossamer-bench-wrk.lua"
    path.write_text(WRK_REPORT_LUA)
    return path


def wrk(url: str, connections: int, duration: float, placement: Placement = PINNED) -> LoadResult:
    argv = [
        *placement.prefix(load=True),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration:.0f}s",
        "--timeout",
        "5s",
        "-s",
        str(_lua_script()),
        url,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=True)
    match = re.search(r"^WRKJSON (\{.*\})$", out.stdout, re.M)
    if match is None:
        raise RuntimeError(f"wrk printed no report:\n{out.stdout}\n{out.stderr}")
    data = json.loads(match.group(1))
    seconds = data["duration_us"] / 1e6
    return LoadResult(
        connections=connections,
        requests=data["requests"],
        seconds=seconds,
        errors=data["errors"] + data["non2xx"],
        rps=data["requests"] / seconds,
        p50_us=data["p50"],
        p99_us=data["p99"],
        p999_us=data["p999"],
    )


def h2load_grpc(
    url: str,
    body_file: Path,
    connections: int,
    duration: float,
    placement: Placement = PINNED,
) -> LoadResult:
    """gRPC unary load: h2load POSTs one length-prefixed message per request.

    h2load itself prints no percentiles, so it logs every request's latency to a file
    and the percentiles are computed here.
    """
    streams = 1 if connections == 1 else 10
    with tempfile.NamedTemporaryFile(prefix="gossamer-h2load-", suffix=".tsv") as log:
        argv = [
            *placement.prefix(load=True),
            "h2load",
            "-t1",
            "-c",
            str(connections),
            "-m",
            str(streams),
            "-D",
            f"{duration:.0f}",
            "-d",
            str(body_file),
            "--log-file",
            log.name,
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            url,
        ]
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + 30, check=True
        )
        latencies = sorted(
            int(line.split("\t")[2]) for line in Path(log.name).read_text().splitlines() if line
        )
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out.stdout)
    fin = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out.stdout)
    if not (done and fin and latencies):
        raise RuntimeError(f"h2load output not understood:\n{out.stdout}\n{out.stderr}")
    completed = int(done.group(1))
    seconds = float(fin.group(1)) / (1000 if fin.group(2) == "ms" else 1)
    return LoadResult(
        connections=connections,
        requests=completed,
        seconds=seconds,
        errors=completed - int(done.group(2)),
        rps=completed / seconds,
        p50_us=percentile(latencies, 50),
        p99_us=percentile(latencies, 99),
        p999_us=percentile(latencies, 99.9),
    )


def percentile(sorted_values: list[int], pct: float) -> float:
    index = min(len(sorted_values) - 1, int(len(sorted_values) * pct / 100))
    return float(sorted_values[index])


def iperf3(port: int, duration: float, placement: Placement = PINNED) -> float:
    """Opaque TCP bulk transfer through ``port``; returns GB/s received."""
    argv = [
        *placement.prefix(load=True),
        "iperf3",
        "-c",
        "127.0.0.1",
        "-p",
        str(port),
        "-t",
        f"{duration:.0f}",
        "-J",
    ]
    for attempt in (1, 2):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
        data = json.loads(out.stdout or "{}")
        received = (data.get("end") or {}).get("sum_received")
        if received is not None:
            return float(received["bits_per_second"]) / 8 / 1e9
        # iperf3 reports e.g. "the server is busy running a test" as JSON; try once more.
        error = data.get("error") or out.stderr.strip() or "no result"
        if attempt == 2:
            raise RuntimeError(f"iperf3: {error}")
        time.sleep(1)
    raise AssertionError("unreachable")
