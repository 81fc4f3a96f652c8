"""A short py-spy profile of the Gossamer proxies in the two-hop topology: the top functions."""

from __future__ import annotations

import collections
import shutil
import subprocess
import threading
from pathlib import Path

from bench import backends, loadgen
from bench.certs import make_mesh_certs
from bench.gossamer import start_pair
from bench.procs import process_group

TOP = 10


def profile_two_hop(root: Path, seconds: float) -> str | None:
    spy = shutil.which("py-spy")
    if spy is None:
        return "py-spy is missing; no profile taken"
    workdir = root / "profile"
    workdir.mkdir(exist_ok=True)
    with process_group(workdir) as group:
        backend = backends.start_nginx(group)
        port = start_pair(group, backend, make_mesh_certs(root))
        proxies = group.measured()
        outputs = [workdir / f"{p.name}.folded" for p in proxies]
        spies = [
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--rate",
                    "250",
                    "--duration",
                    f"{seconds:.0f}",
                    "--pid",
                    str(p.pid),
                    "--output",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for p, out in zip(proxies, outputs, strict=True)
        ]
        load = threading.Thread(target=loadgen.wrk, args=(f"http://127.0.0.1:{port}/", 64, seconds))
        load.start()
        load.join()
        for s in spies:
            s.wait(timeout=seconds + 30)
    return summarize([o for o in outputs if o.exists()])


def summarize(folded_files: list[Path]) -> str:
    """Self and inclusive sample shares of the hottest functions, from folded stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for path in folded_files:
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_short(f) for f in stack.split(";")]
            samples += count
            own[frames[-1]] += count
            for frame in set(frames):
                total[frame] += count
    if not samples:
        return "no samples"
    lines = ["| function | self | inclusive |", "|---|---|---|"]
    for frame, count in own.most_common(TOP):
        lines.append(
            f"| `{frame}` | {100 * count / samples:.1f}% | {100 * total[frame] / samples:.1f}% |"
        )
    return "\n".join(lines)


def _short(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"
    name, _, location = frame.partition(" (")
    location = location.rstrip(")")
    file = location.rsplit("/", 1)[-1].split(":")[0]
    return f"{name} ({file})"
