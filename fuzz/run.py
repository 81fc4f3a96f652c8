"""Run every fuzz target for its share of the inputs and write ``fuzz/results/summary.md``.

``python -m fuzz.run [--total N] [--jobs J] [--deadline HH:MM] [--only T ...]``

Each target runs in its own process (:mod:`fuzz.harness` under atheris/libFuzzer), ``--jobs``
at a time. libFuzzer's wall-clock ``-timeout`` kills a process stuck on one input; that
input is saved by libFuzzer, counted as a hang, and the target resumes with the inputs it
still owes (same for an out-of-memory kill or a crash of the interpreter itself). Work
files (corpus, crashes, logs) live in ``fuzz/work/`` and are not committed; the summary is.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work"
SUMMARY = ROOT / "results" / "summary.md"

#: Share of the total per target, in the order they start (the costliest first, so it runs
#: alongside the others). The stateful proxy targets cost 10-100x more CPU per input than
#: the pure parsers (a fresh event loop, up to four h2 state machines), so they get a
#: smaller share of the inputs; at the default total every target gets at least 50k.
WEIGHTS = {
    "http2_frames": 1.0,
    "http1_server": 2.0,
    "client_hello": 4.0,
    "transport_header": 4.0,
    "admin_parser": 4.0,
    "injector_review": 3.0,
    "identity_csr": 3.0,
    "trace_context": 2.0,
}
MAX_SEGMENTS = 25


@dataclass
class Outcome:
    target: str
    planned: int
    runs: int = 0
    crashes: int = 0
    hangs: int = 0
    unbounded: int = 0
    process_deaths: int = 0
    peak_rss_mb: float = 0.0
    slowest: float = 0.0
    seconds: float = 0.0
    signatures: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run_target(target: str, planned: int, deadline: float | None, seed: int) -> Outcome:
    workdir = WORK / target
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "crashes").mkdir(parents=True)
    outcome = Outcome(target, planned)
    stats_path = workdir / "stats.json"
    for segment in range(MAX_SEGMENTS):
        stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
        remaining = planned - int(stats.get("runs", 0))
        if remaining <= 0:
            break
        cmd = [
            sys.executable, "-m", "fuzz.harness", target,
            "--runs", str(remaining), "--workdir", str(workdir), f"-seed={seed + segment}",
        ]  # fmt: skip
        if deadline is not None:
            left = int(deadline - time.time())
            if left < 10:
                outcome.notes.append("stopped at the deadline")
                break
            cmd.append(f"-max_total_time={left}")
        log = workdir / f"segment-{segment}.log"
        with log.open("wb") as out:
            code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT.parent)
        text = log.read_text(errors="replace")
        if code == 0:
            continue  # done, or stopped by -max_total_time (the deadline check above)
        outcome.process_deaths += 1
        if "ALARM: working on the last Unit" in text or "libFuzzer: timeout" in text:
            outcome.hangs += 1
            outcome.signatures["hang (libFuzzer wall-clock timeout)"] = (
                outcome.signatures.get("hang (libFuzzer wall-clock timeout)", 0) + 1
            )
        elif "out-of-memory" in text:
            outcome.unbounded += 1
            outcome.signatures["out-of-memory (rss limit)"] = (
                outcome.signatures.get("out-of-memory (rss limit)", 0) + 1
            )
        else:
            tail = text.strip().splitlines()[-3:]
            outcome.crashes += 1
            outcome.signatures[f"process died (exit {code}): {' | '.join(tail)[:150]}"] = 1
        # The input that killed it was not counted by the harness: count it here.
        if stats_path.exists():
            stats = json.loads(stats_path.read_text())
            stats["runs"] = int(stats.get("runs", 0)) + 1
            stats_path.write_text(json.dumps(stats))
    if stats_path.exists():
        stats = json.loads(stats_path.read_text())
        outcome.runs = int(stats["runs"])
        outcome.crashes += int(stats["crashes"])
        outcome.hangs += int(stats["hangs"])
        outcome.unbounded += int(stats["unbounded"])
        outcome.peak_rss_mb = float(stats["peak_rss_mb"])
        outcome.slowest = float(stats["slowest_cpu_seconds"])
        outcome.seconds = float(stats["seconds"])
        for signature, count in stats["signatures"].items():
            outcome.signatures[signature] = outcome.signatures.get(signature, 0) + count
    for log in sorted(workdir.glob("segment-*.log")):
        match = re.findall(r"peak_rss_mb:\s+(\d+)", log.read_text(errors="replace"))
        if match:
            outcome.peak_rss_mb = max(outcome.peak_rss_mb, float(match[-1]))
    return outcome


def summary(outcomes: list[Outcome], started: dt.datetime, command: str) -> str:
    total = sum(o.runs for o in outcomes)
    lines = [
        "# Fuzzing summary",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC, `{command}`: {total:,} inputs in all.",
        "Crash = an exception other than the documented parse/validation errors, an",
        "error-level log, an exception reaching the event loop, or the process dying.",
        "Hang = more than 1 s of CPU for one input, or libFuzzer's 10 s wall-clock watchdog.",
        "Unbounded = retained state over the target's documented cap (see each target).",
        "",
        "| target | inputs | crashes | hangs | unbounded | peak RSS (MiB) | slowest input (CPU s) "
        "| inputs/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for o in outcomes:
        rate = o.runs / o.seconds if o.seconds else 0.0
        lines.append(
            f"| {o.target} | {o.runs:,} | {o.crashes} | {o.hangs} | {o.unbounded} "
            f"| {o.peak_rss_mb:.0f} | {o.slowest:.3f} | {rate:,.0f} |"
        )
    lines.append(
        f"| **total** | **{total:,}** | {sum(o.crashes for o in outcomes)} "
        f"| {sum(o.hangs for o in outcomes)} | {sum(o.unbounded for o in outcomes)} "
        f"| {max((o.peak_rss_mb for o in outcomes), default=0):.0f} | | |"
    )
    lines += ["", "## Distinct findings (inputs hitting each)", ""]
    found = False
    for o in outcomes:
        for signature, count in sorted(o.signatures.items()):
            found = True
            lines.append(f"- `{o.target}`: {signature} ({count:,})")
        for note in o.notes:
            lines.append(f"- `{o.target}`: note: {note}")
    if not found:
        lines.append("- none")
    lines += [
        "",
        "Inputs that trigger each finding are in `fuzz/work/<target>/crashes/` (not committed);",
        "replay one with `uv run --group fuzz python -m fuzz.harness <target> --workdir /tmp/x "
        "--replay FILE`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--total", type=int, default=1_050_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--deadline", help="HH:MM UTC: stop every target by then")
    parser.add_argument("--only", nargs="*", choices=sorted(WEIGHTS))
    parser.add_argument("--summary", type=Path, default=SUMMARY)
    args = parser.parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    deadline = None
    if args.deadline:
        hour, minute = (int(x) for x in args.deadline.split(":"))
        at = started.replace(hour=hour, minute=minute, second=0, microsecond=0)
        deadline = at.timestamp()
    targets = args.only or list(WEIGHTS)
    weight = sum(WEIGHTS[t] for t in targets)
    plan = {t: int(args.total * WEIGHTS[t] / weight) for t in targets}
    print("plan:", ", ".join(f"{t}={n:,}" for t, n in plan.items()), flush=True)
    outcomes: dict[str, Outcome] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            pool.submit(run_target, t, n, deadline, 1000 * (i + 1)): t
            for i, (t, n) in enumerate(plan.items())
        }
        for future in concurrent.futures.as_completed(futures):
            outcome = future.result()
            outcomes[outcome.target] = outcome
            print(f"{outcome.target}: {outcome.runs:,} inputs, {outcome.crashes} crashes, "
                  f"{outcome.hangs} hangs, {outcome.unbounded} unbounded", flush=True)  # fmt: skip
    ordered = [outcomes[t] for t in targets]
    command = "python -m fuzz.run " + " ".join(argv)
    text = summary(ordered, started, command.strip())
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    args.summary.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
