"""The standard ``process_*`` metrics, read from ``/proc/self`` at scrape time.

Names follow the Prometheus client convention (the same ones the Linkerd proxy
exports), so existing dashboards and ``linkerd viz`` queries keep working.
Reading happens only when Prometheus scrapes, never on the request path.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

from gossamer_common.metrics import MetricSnapshot, Registry, Sample

__all__ = ["ProcessStats", "process_age_seconds", "read_process_stats", "register_process_metrics"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class ProcessStats:
    """One reading of the process counters (plain numbers, easy to assert on)."""

    __slots__ = (
        "cpu_seconds",
        "max_fds",
        "open_fds",
        "resident_memory_bytes",
        "start_time_seconds",
        "threads",
        "virtual_memory_bytes",
    )

    def __init__(
        self,
        *,
        cpu_seconds: float,
        open_fds: int,
        max_fds: int,
        virtual_memory_bytes: int,
        resident_memory_bytes: int,
        start_time_seconds: float,
        threads: int,
    ) -> None:
        self.cpu_seconds = cpu_seconds
        self.open_fds = open_fds
        self.max_fds = max_fds
        self.virtual_memory_bytes = virtual_memory_bytes
        self.resident_memory_bytes = resident_memory_bytes
        self.start_time_seconds = start_time_seconds
        self.threads = threads


def _boot_time(proc: Path) -> float:
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise RuntimeError(f"no btime line in {proc / 'stat'}")


def parse_stat(stat: str) -> list[str]:
    """Split ``/proc/<pid>/stat`` into fields, coping with spaces or ')' in the command name.

    The returned list is indexed so that ``fields[0]`` is the state (field 3 in proc(5)).
    """
    return stat[stat.rindex(")") + 2 :].split()


def read_process_stats(proc: Path = Path("/proc")) -> ProcessStats:
    fields = parse_stat((proc / "self" / "stat").read_text())
    # proc(5) numbering minus 3: utime=14, stime=15, num_threads=20, starttime=22, vsize=23, rss=24
    utime, stime = int(fields[11]), int(fields[12])
    threads = int(fields[17])
    start_ticks = int(fields[19])
    vsize, rss_pages = int(fields[20]), int(fields[21])
    return ProcessStats(
        cpu_seconds=(utime + stime) / _CLK_TCK,
        open_fds=len(os.listdir(proc / "self" / "fd")),
        max_fds=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        virtual_memory_bytes=vsize,
        resident_memory_bytes=rss_pages * _PAGE_SIZE,
        start_time_seconds=_boot_time(proc) + start_ticks / _CLK_TCK,
        threads=threads,
    )


def process_age_seconds(proc: Path = Path("/proc"), now_since_boot: float | None = None) -> float:
    """How long ago this process was started (to the clock tick), for a start-up log line.

    ``starttime`` in ``/proc/self/stat`` counts ticks since boot, so it is compared with the
    boot-time clock (which, unlike ``btime``, is not rounded to whole seconds).
    """
    fields = parse_stat((proc / "self" / "stat").read_text())
    started = int(fields[19]) / _CLK_TCK
    now = time.clock_gettime(time.CLOCK_BOOTTIME) if now_since_boot is None else now_since_boot
    return max(0.0, now - started)


def _snapshots() -> list[MetricSnapshot]:
    s = read_process_stats()
    return [
        MetricSnapshot(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            "counter",
            (Sample(s.cpu_seconds),),
        ),
        MetricSnapshot(
            "process_open_fds", "Number of open file descriptors.", "gauge", (Sample(s.open_fds),)
        ),
        MetricSnapshot(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            "gauge",
            (Sample(s.max_fds),),
        ),
        MetricSnapshot(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            "gauge",
            (Sample(s.virtual_memory_bytes),),
        ),
        MetricSnapshot(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            "gauge",
            (Sample(s.resident_memory_bytes),),
        ),
        MetricSnapshot(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            "gauge",
            (Sample(s.start_time_seconds),),
        ),
        MetricSnapshot(
            "process_threads", "Number of OS threads in the process.", "gauge", (Sample(s.threads),)
        ),
    ]


_NAMES = (
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
)


def register_process_metrics(registry: Registry) -> None:
    """Export the process metrics from ``registry`` (Linux only: they come from /proc)."""
    registry.register_collector(_snapshots, names=_NAMES)
