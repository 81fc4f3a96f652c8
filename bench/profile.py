"""A short py-spy profile of the Gossamer proxies in a two-hop topology: the top functions.

``uv run --frozen python -m bench.profile [--grpc] [--seconds 20] [--top 25]``

``make bench`` profiles the HTTP/1.1 two-hop topology (wrk at c=64); ``--grpc`` profiles
gRPC unary through the same two mTLS hops instead (h2load at c=64, ten streams each, to the
bench's grpcio echo server). Each proxy is sampled on its own; the table sums both.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from bench import backends, loadgen
from bench.certs import make_mesh_certs
from bench.gossamer import start_pair
from bench.procs import process_group

TOP = 10


def profile_two_hop(
    root: Path, seconds: float, *, grpc: bool = False, top: int = TOP
) -> str | None:
    spy = shutil.which("py-spy")
    if spy is None:
        return "py-spy is missing; no profile taken"
    workdir = root / ("profile-grpc" if grpc else "profile")
    workdir.mkdir(exist_ok=True)
    with process_group(workdir) as group:
        backend = backends.start_grpc_server(group) if grpc else backends.start_nginx(group)
        port = start_pair(group, backend, make_mesh_certs(root))
        proxies = group.measured()
        if grpc:
            url = f"http://127.0.0.1:{port}/bench.Echo/Unary"
            body = backends.grpc_body(workdir)
            loadgen.h2load_grpc(url, body, 64, 2)  # warm: connections made, imports done
            load = threading.Thread(target=loadgen.h2load_grpc, args=(url, body, 64, seconds))
        else:
            load = threading.Thread(
                target=loadgen.wrk, args=(f"http://127.0.0.1:{port}/", 64, seconds)
            )
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
        load.start()
        load.join()
        for s in spies:
            s.wait(timeout=seconds + 30)
    return summarize([o for o in outputs if o.exists()], top)


def summarize(folded_files: list[Path], top: int = TOP) -> str:
    """Self and inclusive sample shares of the hottest functions, from folded stacks.

    The rows are the ``top`` functions by self share, then those by inclusive share that
    were not among them (the callers that the self column hides).
    """
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
    lines = [f"{samples} samples", "", "| function | self | inclusive |", "|---|---|---|"]
    shown = [frame for frame, _ in own.most_common(top)]
    shown += [frame for frame, _ in total.most_common(top) if frame not in shown]
    for frame in shown:
        lines.append(
            f"| `{frame}` | {100 * own[frame] / samples:.1f}% "
            f"| {100 * total[frame] / samples:.1f}% |"
        )
    return "\n".join(lines)


def _short(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"
    name, _, location = frame.partition(" (")
    location = location.rstrip(")")
    file = location.rsplit("/", 1)[-1].split(":")[0]
    return f"{name} ({file})"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--grpc", action="store_true", help="gRPC unary instead of HTTP/1.1")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep", type=Path, help="keep the folded stacks in this directory")
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        root = args.keep
        print(profile_two_hop(root, args.seconds, grpc=args.grpc, top=args.top))
        return 0
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gossamer-profile-") as tmp:
        print(profile_two_hop(Path(tmp), args.seconds, grpc=args.grpc, top=args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
