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
from collections.abc import Callable, Mapping
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


#: A row whose failed requests exceed this share of its requests is flagged in the report,
#: and an rps goal measured on it cannot be met.
ERROR_RATE_LIMIT = 0.001


@dataclass(frozen=True)
class LoadResult:
    """One row of load: ``requests`` completed, of which ``errors`` failed.

    For gRPC, ``rps`` counts successful requests only (``requests - errors``); for wrk it
    counts every completed request, as wrk reports it.
    """

    connections: int
    requests: int
    seconds: float
    errors: int
    rps: float
    p50_us: float
    p99_us: float
    p999_us: float
    #: gRPC only: h2load's answers by :status class ("2xx" … "5xx").
    statuses: Mapping[str, int] | None = None
    #: gRPC only: completed requests the backend never answered OK (a proxy's error answer).
    unanswered: int | None = None
    #: gRPC only: completed requests whose answer carried no reply message (a gRPC error).
    unreplied: int | None = None
    #: Gossamer pairs only: the failed responses each proxy counted during the row (its
    #: ``response_total{classification="failure"}``), by proxy and reason; a cross-check.
    proxy_failures: Mapping[str, Mapping[str, int]] | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class H2loadSummary:
    """What h2load printed about one run."""

    seconds: float
    started: int
    done: int
    #: Done with a 2xx or 3xx :status (h2load's "succeeded"), whatever the grpc-status.
    succeeded: int
    statuses: Mapping[str, int]
    #: DATA bytes received on the completed streams (the replies' gRPC messages).
    data_bytes: int

    @property
    def failed(self) -> int:
        """Done but not succeeded: a 4xx/5xx :status, or the stream was reset."""
        return self.done - self.succeeded


def parse_h2load(stdout: str) -> H2loadSummary:
    """h2load's summary lines; a clear error when they are missing or inconsistent."""
    fin = re.search(r"^finished in ([\d.]+)(m?s), ", stdout, re.M)
    counts = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", stdout, re.M
    )
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", stdout, re.M)
    traffic = re.search(r"^traffic: .*\((\d+)\) data$", stdout, re.M)
    if not (fin and counts and codes and traffic):
        raise RuntimeError(f"h2load output not understood:\n{stdout}")
    seconds = float(fin.group(1)) / (1000 if fin.group(2) == "ms" else 1)
    started, done, succeeded = (int(counts.group(i)) for i in (2, 3, 4))
    statuses = dict(zip(("2xx", "3xx", "4xx", "5xx"), map(int, codes.groups()), strict=True))
    if not seconds > 0 or succeeded > done or done > started:
        raise RuntimeError(f"h2load output inconsistent:\n{stdout}")
    return H2loadSummary(seconds, started, done, succeeded, statuses, int(traffic.group(1)))


@dataclass(frozen=True)
class GrpcFailures:
    """The failed calls of a gRPC run, and what found them."""

    #: The larger of the counts below and h2load's own failures: a lower bound.
    errors: int
    #: Completed calls that carried no reply message: a trailers-only answer is a gRPC error.
    unreplied: int
    #: Completed calls beyond those the backend answered OK (``None``: no backend count).
    unanswered: int | None


def grpc_failures(
    summary: H2loadSummary, reply_bytes: int, answered: int | None = None
) -> GrpcFailures:
    """Failed calls of a gRPC run of h2load, whose every successful reply is ``reply_bytes``.

    h2load counts a call as succeeded on any 2xx/3xx :status, so a proxy's gRPC error
    (grpc-status other than 0, trailers-only with :status 200) passes as a success. Two
    counts that do not depend on the target find them: each successful call's reply carries
    one message of ``reply_bytes`` (the echo of the request), and an error answer none, so
    completed calls beyond ``data_bytes // reply_bytes`` failed; and the backend counts the
    calls it answered OK (``answered``, during the run), so completed calls beyond that
    count were answered by something else. Both are lower bounds (a reply message followed
    by error trailers counts as a reply; the backend may also have answered calls still in
    flight when h2load stopped, which h2load does not count), and so is their maximum with
    h2load's own failures (4xx/5xx :status, reset streams), which is the run's ``errors``.
    """
    if reply_bytes <= 0:
        raise ValueError(f"a gRPC reply has at least its 5-byte prefix, not {reply_bytes} bytes")
    unreplied = max(summary.done - summary.data_bytes // reply_bytes, 0)
    unanswered = None if answered is None else max(summary.done - answered, 0)
    errors = max(summary.failed, unreplied, unanswered or 0)
    return GrpcFailures(errors, unreplied, unanswered)


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
    answered: Callable[[], int] | None = None,
) -> LoadResult:
    """gRPC unary load: h2load POSTs one length-prefixed message per request.

    h2load itself prints no percentiles, so it logs every request's latency to a file
    and the percentiles are computed here. The backend echoes ``body_file`` back;
    ``answered`` reads its count of calls answered OK (before and after the run). Both find
    the gRPC errors that h2load counts as successes (:func:`grpc_failures`). ``rps`` counts
    successful requests only.
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
        before = answered() if answered is not None else None
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + 30, check=True
        )
        answered_ok = answered() - before if answered is not None and before is not None else None
        latencies = sorted(
            int(line.split("\t")[2]) for line in Path(log.name).read_text().splitlines() if line
        )
    try:
        summary = parse_h2load(out.stdout)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{out.stderr}") from None
    if not latencies:
        raise RuntimeError(f"h2load logged no request:\n{out.stdout}\n{out.stderr}")
    failures = grpc_failures(summary, body_file.stat().st_size, answered_ok)
    return LoadResult(
        connections=connections,
        requests=summary.done,
        seconds=summary.seconds,
        errors=failures.errors,
        rps=(summary.done - failures.errors) / summary.seconds,
        p50_us=percentile(latencies, 50),
        p99_us=percentile(latencies, 99),
        p999_us=percentile(latencies, 99.9),
        statuses=summary.statuses,
        unanswered=failures.unanswered,
        unreplied=failures.unreplied,
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
