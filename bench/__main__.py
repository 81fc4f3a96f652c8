"""``make bench``: direct, Gossamer and Envoy side by side, in interleaved rounds, as ratios.

Proxies and backends are pinned to CPU 0 and the load generator to CPU 1, except in the
``multicore`` topology (``--only multicore``): its 2-core proxies need both CPUs, so nothing
is pinned there and its figures are a scaling check, reported in their own section. Every
target of a topology is started once and warmed up; then each round runs every row (c=1, 16,
64) for every target in turn, the first target rotating, so a noisy moment of the machine does
not land on one side only (:mod:`bench.rounds`). The cold topology starts fresh proxies for
every round instead and measures c=64 with no warm-up. ``--baseline-rev REV`` adds that git
revision's proxy as one more target of every topology (:mod:`bench.baseline`). The tap
topology measures tap served but idle against tap off, and a tap client observing every
request at c=64 (``--only tap`` runs it alone).

Results go to bench/results/: report.md (goals first), results.json and one PNG per topology.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import functools
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import goals, gossamer, loadgen, report
from bench.backends import grpc_answered, grpc_body
from bench.baseline import Baseline, BaselineError, build_baseline
from bench.bytecode import compile_bytecode
from bench.certs import make_mesh_certs
from bench.measured import TargetResult
from bench.procs import (
    ProcGroup,
    cpu_seconds,
    peak_rss_mb,
    process_group,
    process_tree,
)
from bench.profile import profile_two_hop
from bench.rounds import schedule
from bench.tapping import tapping
from bench.topologies import (
    TOPOLOGIES,
    TargetBuilder,
    Topology,
    placement_note,
    start_backend,
    workdir_for,
)

RESULTS = Path(__file__).parent / "results"
COLD_CONNECTIONS = 64


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _rounds(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least one round, not {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--seconds", type=_positive, default=5.0, help="duration of each row in each round"
    )
    parser.add_argument("--warmup", type=_positive, default=2.0, help="warm-up of each target")
    parser.add_argument("--rounds", type=_rounds, default=3, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--cold-seconds", type=_positive, default=4.0, help="duration of the cold row"
    )
    parser.add_argument(
        "--only",
        nargs="*",
        choices=[t.name for t in TOPOLOGIES],
        help="topologies to run (default: all)",
    )
    parser.add_argument(
        "--baseline-rev",
        metavar="REV",
        help="also run the proxy of this git revision (e.g. e01e59f) as the `baseline` target",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    return parser.parse_args(argv)


def _failed(result: TargetResult, exc: Exception) -> None:
    result.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    print(f"  {result.topology} {result.name}: {result.error}", file=sys.stderr)


def _load(
    topology: Topology, ports: tuple[int, int], workdir: Path, c: int, seconds: float
) -> loadgen.LoadResult:
    """Load on ``ports`` (the target's, the backend's): the backend counts gRPC answers."""
    port, backend_port = ports
    if topology.backend == "grpc":
        url = f"http://127.0.0.1:{port}/bench.Echo/Unary"
        return loadgen.h2load_grpc(
            url,
            grpc_body(workdir),
            c,
            seconds,
            topology.placement,
            answered=functools.partial(grpc_answered, backend_port),
        )
    return loadgen.wrk(f"http://127.0.0.1:{port}/", c, seconds, topology.placement)


def _measured_cpu(group: ProcGroup) -> float:
    """CPU time of the target's processes and of their children (a proxy's workers)."""
    return sum(cpu_seconds(p.pid) for p in group.measured())


def _request_row(
    result: TargetResult,
    topology: Topology,
    group: ProcGroup,
    ports: tuple[int, int],
    c: int,
    seconds: float,
) -> None:
    admins = gossamer.admin_ports(group.info)
    failed_before = {name: gossamer.failed_responses(port) for name, port in admins.items()}
    with contextlib.ExitStack() as stack:
        tap = (
            stack.enter_context(tapping(group, len(result.tap_seen)))
            if result.target in topology.tapped
            else None
        )
        before = _measured_cpu(group)
        run = _load(topology, ports, group.workdir, c, seconds)
        spent = _measured_cpu(group) - before
    group.check_alive()
    if admins:
        failed = {
            name: dict(gossamer.failed_responses(port) - failed_before[name])
            for name, port in admins.items()
        }
        run = dataclasses.replace(run, proxy_failures=failed)
    result.add_run(run)
    if tap is not None:
        seen = tap.seen(run.requests)
        result.tap_seen.append(seen)
        print(
            f"  {'':15} {'':18} tap saw {seen.request_inits:,} requests, "
            f"{seen.events:,} events, dropped {seen.dropped_events:,}"
            + (f", error: {seen.error}" if seen.error else ""),
            file=sys.stderr,
        )
    if c == 64 and run.requests and group.measured():
        result.cpu_seconds_per_10k.append(spent / run.requests * 10_000)
    print(
        f"  {topology.name:15} {result.name:20} c={c:<3} {run.rps:>10,.0f} rps "
        f"p50 {run.p50_us:>7.0f}µs p99 {run.p99_us:>7.0f}µs errors {run.errors}"
        + (f" of {run.requests} ({run.error_rate:.2%})" if run.errors else "")
        + (f" statuses {dict(run.statuses)}" if run.statuses else "")
        + (
            f" unreplied {run.unreplied} unanswered {run.unanswered}"
            if run.unreplied is not None
            else ""
        )
        + (
            f" proxies counted failed {run.proxy_failures}"
            if run.proxy_failures and any(run.proxy_failures.values())
            else ""
        ),
        file=sys.stderr,
    )


def _bulk_row(result: TargetResult, group: ProcGroup, port: int, seconds: float) -> None:
    before = _measured_cpu(group)
    gbps = loadgen.iperf3(port, seconds, group.placement)
    spent = _measured_cpu(group) - before
    group.check_alive()
    result.gbytes_per_second.append(gbps)
    moved = gbps * seconds
    if group.measured() and moved:
        result.cpu_seconds_per_10k.append(spent / moved)  # CPU seconds per GB here
    print(f"  tcp             {result.name:18} {gbps:.2f} GB/s", file=sys.stderr)


def _start(topology: Topology, builder: TargetBuilder, group: ProcGroup) -> tuple[int, int]:
    """The port the load generator hits, and the backend's."""
    backend_port = start_backend(topology.backend, group)
    port = builder(group, backend_port, make_mesh_certs(group.workdir))
    group.check_alive()
    return port, backend_port


def _rss(group: ProcGroup) -> dict[str, float]:
    """Each measured process's peak RSS, summed over it and its workers."""
    return {p.name: peak_rss_mb(p.pid) for p in group.measured()}


def _record_footprint(result: TargetResult, group: ProcGroup) -> None:
    result.record_rss(_rss(group))
    result.record_processes({p.name: len(process_tree(p.pid)) for p in group.measured()})


def run_warm(
    topology: Topology,
    builders: dict[str, TargetBuilder],
    results: dict[str, TargetResult],
    root: Path,
    args: argparse.Namespace,
) -> None:
    """Start every target, warm each up, then run the rows in interleaved rounds."""
    with contextlib.ExitStack() as stack:
        groups: dict[str, ProcGroup] = {}
        ports: dict[str, tuple[int, int]] = {}
        for name, builder in builders.items():
            group = stack.enter_context(
                process_group(workdir_for(root, topology, name), topology.placement)
            )
            try:
                ports[name] = _start(topology, builder, group)
                groups[name] = group
                if topology.backend != "iperf3":
                    _load(topology, ports[name], group.workdir, 64, args.warmup)
            except Exception as exc:  # a failing target is reported; the others still run
                _failed(results[name], exc)
        rows: tuple[int | None, ...] = (
            (None,) if topology.backend == "iperf3" else topology.connections
        )
        for order in schedule(list(groups), args.rounds):
            for c in rows:
                for name in order:
                    result = results[name]
                    if result.error or (c is not None and c not in topology.rows_of(name)):
                        continue
                    try:
                        if c is None:
                            _bulk_row(result, groups[name], ports[name][0], args.seconds)
                        else:
                            _request_row(
                                result, topology, groups[name], ports[name], c, args.seconds
                            )
                    except Exception as exc:
                        _failed(result, exc)
        for name, group in groups.items():
            if not results[name].error:
                _record_footprint(results[name], group)


def run_cold(
    topology: Topology,
    builders: dict[str, TargetBuilder],
    results: dict[str, TargetResult],
    root: Path,
    args: argparse.Namespace,
) -> None:
    """Fresh processes for every target in every round; c=64 at once, no warm-up.

    A start that fails (a busy machine) is tried once more with fresh processes, so that
    one slow start does not drop the target from every later round.
    """
    for index, order in enumerate(schedule(list(builders), args.rounds)):
        for name in order:
            result = results[name]
            for attempt in (0, 1):
                if result.error:
                    break
                workdir = workdir_for(root, topology, f"{name}-a{attempt}", index)
                with process_group(workdir, topology.placement) as group:
                    try:
                        ports = _start(topology, builders[name], group)
                    except Exception as exc:
                        if attempt:
                            _failed(result, exc)
                        else:
                            print(f"  {name}: start failed, once more: {exc}", file=sys.stderr)
                        continue
                    try:
                        _request_row(
                            result, topology, group, ports, COLD_CONNECTIONS, args.cold_seconds
                        )
                        _record_footprint(result, group)
                    except Exception as exc:
                        _failed(result, exc)
                    break


def run_topology(
    topology: Topology, root: Path, args: argparse.Namespace, baseline: Baseline | None
) -> dict[str, TargetResult]:
    builders = topology.builders(baseline.python if baseline else None)
    labels = {"baseline": baseline.label} if baseline else {}
    results = {
        name: TargetResult(topology.name, name, label=labels.get(name, "")) for name in builders
    }
    print(f"{topology.title}", file=sys.stderr)
    (run_cold if topology.cold else run_warm)(topology, builders, results, root, args)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("wrk", "h2load", "iperf3", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is missing (make bench installs it)", file=sys.stderr)
            return 2
    baseline = None
    if args.baseline_rev:
        try:
            baseline = build_baseline(args.baseline_rev)
        except BaselineError as exc:
            print(f"bench: baseline: {exc}", file=sys.stderr)
            return 2
    # The proxies run from bytecode, as the image's and local mode's do (see bench.bytecode).
    for python in [sys.executable] + ([baseline.python] if baseline else []):
        compile_bytecode(python)
    RESULTS.mkdir(exist_ok=True)
    started, load_at_start = time.monotonic(), os.getloadavg()[0]
    chosen = [t for t in TOPOLOGIES if not args.only or t.name in args.only]
    by_topology: dict[str, dict[str, TargetResult]] = {}
    with tempfile.TemporaryDirectory(prefix="gossamer-bench-") as tmp:
        root = Path(tmp)
        for topology in chosen:
            by_topology[topology.name] = run_topology(topology, root, args, baseline)
        profile = None if args.no_profile else profile_two_hop(root, args.seconds)
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": placement_note(chosen),
        "rounds": f"{args.rounds} interleaved (medians; ratios paired by round, min-max)",
        "seconds per row": args.seconds,
        "cold row": f"{args.cold_seconds:g}s at c={COLD_CONNECTIONS}, fresh proxies each round",
        "envoy": subprocess.run(["envoy", "--version"], capture_output=True, text=True)
        .stdout.strip()
        .split()[-1],
        "wall time": f"{time.monotonic() - started:.0f}s",
        "load average (1 min)": f"{load_at_start:.2f} at start, {os.getloadavg()[0]:.2f} at end, "
        f"on {os.cpu_count()} CPUs",
    }
    if baseline is not None:
        meta["baseline"] = f"{baseline.label} ({baseline.python})"
    titles = {t.name: t.title for t in chosen}
    verdicts = goals.verdicts(by_topology)
    text = report.markdown(
        by_topology,
        titles,
        meta,
        verdicts,
        baseline.label if baseline else None,
        {t.name: t.scaling for t in chosen if t.scaling is not None},
    )
    if profile:
        text += (
            "\n## Where the proxy spends its time (two-hop HTTP/1.1, py-spy)\n\n" + profile + "\n"
        )
    (RESULTS / "report.md").write_text(text)
    report.write_json(by_topology, meta, RESULTS / "results.json")
    report.plots(by_topology, titles, RESULTS)
    print(text)
    print(f"written: {RESULTS}/report.md, results.json, *.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
