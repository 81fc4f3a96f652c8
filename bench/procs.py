"""Starting pinned processes for the benchmark and reading what they cost (CPU, RSS)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PROXY_CPU = 0
LOAD_CPU = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Proc:
    """A process the benchmark started (and alone stops), pinned to one CPU."""

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
    """Every process of one target; stopped together."""

    workdir: Path
    procs: list[Proc] = field(default_factory=list)
    #: What a target's builder tells the rows about it (the tap topology: the control port).
    info: dict[str, str] = field(default_factory=dict)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpu: int = PROXY_CPU,
        env: dict[str, str] | None = None,
        measured: bool = True,
    ) -> Proc:
        log = self.workdir / f"{name}.log"
        out = log.open("wb")
        popen = subprocess.Popen(
            ["taskset", "-c", str(cpu), *argv],
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
def process_group(workdir: Path) -> Iterator[ProcGroup]:
    group = ProcGroup(workdir)
    try:
        yield group
    finally:
        group.stop()
