"""Starting (pinned) processes for the benchmark and reading what they cost (CPU, RSS).

A target's cost is that of its whole process tree: a multi-core proxy is a parent and its
workers (``LINKERD2_PROXY_CORES``), and every one of them counts. The tree is read from
/proc (each process's parent), and the reduction is pure (:func:`tree_cpu_ticks`,
:func:`descendants`) so that it is tested without processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PROXY_CPU = 0
LOAD_CPU = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class Placement:
    """The CPUs the targets (proxies and backends) and the load generators may run on.

    A CPU list as ``taskset -c`` takes it, or ``None``: not pinned, wherever the scheduler
    puts them.
    """

    proxies: str | None
    load: str | None

    def prefix(self, *, load: bool = False) -> list[str]:
        """What goes before a command's argv to run it there."""
        cpus = self.load if load else self.proxies
        return [] if cpus is None else ["taskset", "-c", cpus]

    def describe(self) -> str:
        def where(cpus: str | None) -> str:
            return "unpinned" if cpus is None else f"on CPU {cpus}"

        if self.proxies is None and self.load is None:
            return "nothing pinned: proxies, backend and load generator share every CPU"
        return f"proxies and backends {where(self.proxies)}, load generator {where(self.load)}"


#: The per-core topologies: the target alone on one CPU, the load generator on the other.
PINNED = Placement(str(PROXY_CPU), str(LOAD_CPU))
#: The multi-core topology: a 2-core proxy needs both CPUs, so nothing is pinned.
UNPINNED = Placement(None, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


@dataclass(frozen=True)
class ProcStat:
    """What ``/proc/<pid>/stat`` says of one process's family and CPU time (clock ticks)."""

    ppid: int
    #: utime + stime: the process's own CPU time.
    own_ticks: int
    #: cutime + cstime: its children's that it has waited for (exited workers included).
    reaped_children_ticks: int

    @classmethod
    def parse(cls, text: str) -> ProcStat:
        """``ValueError`` on text that is not a stat line (the name may hold spaces and ')')."""
        head, sep, rest = text.rpartition(")")
        fields = rest.split()
        if not sep or not head or len(fields) < 15:
            raise ValueError(f"not a /proc/<pid>/stat line: {text[:80]!r}")
        return cls(
            ppid=int(fields[1]),
            own_ticks=int(fields[11]) + int(fields[12]),
            reaped_children_ticks=int(fields[13]) + int(fields[14]),
        )


def descendants(root: int, parents: Mapping[int, int]) -> list[int]:
    """Every live process below ``root``, by the parent of each pid (``parents``)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid == root or pid in found:  # a pid reused mid-scan must not loop
            continue
        found.add(pid)
        todo += children.get(pid, [])
    return sorted(found)


def tree_cpu_ticks(root: int, stats: Mapping[int, ProcStat]) -> int:
    """CPU time of ``root`` and everything below it, living or exited.

    Each live process counts its own time and its waited-for children's; a child that has
    exited but not yet been waited for is missed until then (a moment).
    """
    tree = [root, *descendants(root, {pid: s.ppid for pid, s in stats.items()})]
    return sum(
        stats[pid].own_ticks + stats[pid].reaped_children_ticks for pid in tree if pid in stats
    )


def _read_stats() -> dict[int, ProcStat]:
    stats: dict[int, ProcStat] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stats[int(entry.name)] = ProcStat.parse((entry / "stat").read_text())
        except (OSError, ValueError):  # gone between the listing and the read
            continue
    return stats


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (a multi-core proxy's workers)."""
    return [pid, *descendants(pid, {p: s.ppid for p, s in _read_stats().items()})]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and of every process below it, from /proc."""
    return tree_cpu_ticks(pid, _read_stats()) / CLK_TCK


def _peak_rss_of(pid: int) -> float:
    try:
        lines = (PROC / str(pid) / "status").read_text().splitlines()
    except OSError:  # exited since the tree was read
        return 0.0
    for line in lines:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of ``pid`` and of every live process below it, summed.

    The sum counts pages the processes share (the interpreter, imported modules) once per
    process: it is what the processes together may hold at most, as a container's memory
    limit would see their RSS, not their unique memory.
    """
    return sum(_peak_rss_of(p) for p in process_tree(pid))


@dataclass
class Proc:
    """A process the benchmark started (and alone stops), in its own process group.

    Its children (a multi-core proxy's workers) share that group: :meth:`stop` signals them
    all, and :func:`cpu_seconds` and :func:`peak_rss_mb` count them.
    """

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    measured: bool = True

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)


@dataclass
class ProcGroup:
    """Every process of one target; stopped together, started where ``placement`` says."""

    workdir: Path
    placement: Placement = PINNED
    procs: list[Proc] = field(default_factory=list)
    #: What a target's builder tells the rows about it (the tap topology: the control port).
    info: dict[str, str] = field(default_factory=dict)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        load: bool = False,
        env: dict[str, str] | None = None,
        measured: bool = True,
    ) -> Proc:
        """Start ``argv`` on the target's CPUs, or on the load generator's with ``load``."""
        log = self.workdir / f"{name}.log"
        out = log.open("wb")
        popen = subprocess.Popen(
            [*self.placement.prefix(load=load), *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        out.close()
        proc = Proc(name, popen, log, measured)
        self.procs.append(proc)
        return proc

    def check_alive(self) -> None:
        for p in self.procs:
            if p.popen.poll() is not None:
                tail = p.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{p.name} exited with {p.popen.returncode}:\n{tail}")

    def forget(self, proc: Proc) -> None:
        """Stop ``proc`` and no longer count it in the group (a per-row helper process)."""
        proc.stop()
        self.procs.remove(proc)

    def measured(self) -> list[Proc]:
        return [p for p in self.procs if p.measured]

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


@contextlib.contextmanager
def process_group(workdir: Path, placement: Placement = PINNED) -> Iterator[ProcGroup]:
    group = ProcGroup(workdir, placement)
    try:
        yield group
    finally:
        group.stop()
