"""Start, identify and stop the cluster's component processes, and nothing else.

Each component runs in its own session (so its process group id is its pid) with stdout and
stderr going to a log file. A component is identified by (pid, start time from /proc), which
lets ``down`` in a later Python process stop exactly the processes ``up`` started even if a
pid has since been reused by an unrelated program.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ComponentProcess", "ProcessRecord", "proc_start_time", "tail"]


def proc_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2 :].split()[0] in ("Z", "X")


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (for start-up error messages)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError as exc:
        return f"<cannot read {path}: {exc.strerror}>"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


@dataclass(frozen=True)
class ProcessRecord:
    """What identifies a started component across Python processes (stored as JSON)."""

    name: str
    pid: int
    start_time: int
    log: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "start_time": self.start_time, "log": self.log}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ProcessRecord:
        return cls(str(doc["name"]), int(doc["pid"]), int(doc["start_time"]), str(doc["log"]))

    def is_ours(self) -> bool:
        """True while the pid still names the process we started (not a reused pid)."""
        return proc_start_time(self.pid) == self.start_time and not _is_zombie(self.pid)

    def stop(self, timeout: float = 10.0, popen: subprocess.Popen[bytes] | None = None) -> None:
        """SIGTERM the component's process group, then SIGKILL it after ``timeout``.

        If the leader is gone, the group id cannot have been handed to another process while
        any member is alive, so signalling the group still reaches only our processes.
        """
        current = proc_start_time(self.pid)
        if current is not None and current != self.start_time:
            return  # the pid now belongs to another program; our group is long gone
        _killpg(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if popen is not None:
                popen.poll()
            if not _group_alive(self.pid):
                break
            time.sleep(0.05)
        else:
            _killpg(self.pid, signal.SIGKILL)
            end = time.monotonic() + 5.0
            while _group_alive(self.pid) and time.monotonic() < end:
                if popen is not None:
                    popen.poll()
                time.sleep(0.05)
        if popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=5.0)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process is in group ``pgid``."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


class ComponentProcess:
    """One running component: its Popen (when started by this process) and its record."""

    def __init__(self, record: ProcessRecord, popen: subprocess.Popen[bytes] | None) -> None:
        self.record = record
        self.popen = popen

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ComponentProcess:
        with log.open("ab") as out:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=dict(env) if env is not None else None,
                cwd=cwd,
            )
        start = proc_start_time(popen.pid)
        record = ProcessRecord(name, popen.pid, start if start is not None else -1, str(log))
        return cls(record, popen)

    @property
    def name(self) -> str:
        return self.record.name

    def exited(self) -> int | None:
        """The exit code if the process has ended (it is never expected to)."""
        if self.popen is not None:
            return self.popen.poll()
        return None if self.record.is_ours() else -1

    def stop(self, timeout: float = 10.0) -> None:
        self.record.stop(timeout, self.popen)
