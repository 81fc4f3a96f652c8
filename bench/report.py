"""Turning measured rounds into the markdown report, the JSON file and the PNG plots.

Figures in the tables are medians over the rounds; ratios are the median of the per-round
ratios with their range, ``1.23x (1.10-1.31)``. The goals table comes first. A multi-core
topology gets a section of its own (:func:`multicore_section`) and no row in the goals table.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.goals import Verdict
from bench.loadgen import ERROR_RATE_LIMIT, LoadResult
from bench.measured import TargetResult, Targets, median_run
from bench.rounds import Spread, paired_ratios
from bench.scaling import ScalingCheck, rps_ratio

__all__ = [
    "TargetResult",
    "goals_table",
    "markdown",
    "multicore_section",
    "plots",
    "write_json",
]


def _fmt_us(us: float | None) -> str:
    if us is None:
        return "—"
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def _num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _spread(values: Sequence[float]) -> str:
    spread = Spread.of(values)
    return "—" if spread is None else spread.format()


def _median(values: Sequence[float]) -> float | None:
    spread = Spread.of(values)
    return None if spread is None else spread.median


def _runs(r: TargetResult | None, c: int, key: str) -> list[float | None]:
    return [float(getattr(run, key)) for run in r.runs.get(c, [])] if r is not None else []


def _added(r: TargetResult | None, direct: TargetResult | None, c: int, key: str) -> list[float]:
    return [
        m - d
        for m, d in zip(_runs(r, c, key), _runs(direct, c, key), strict=False)
        if m is not None and d is not None
    ]


def _ratio_to(r: TargetResult, ref: TargetResult | None, c: int, key: str) -> str:
    if ref is None or ref is r:
        return "—"
    return _spread(paired_ratios(_runs(r, c, key), _runs(ref, c, key)))


def _rss(r: TargetResult) -> str:
    if not r.peak_rss_mb:
        return "—"
    return ", ".join(f"{name} {mb:.0f} MB" for name, mb in r.peak_rss_mb.items())


def _err(r: TargetResult) -> str:
    return f" failed: {r.error}" if r.error else ""


def _rounds(r: TargetResult) -> int:
    counts = [len(v) for v in r.runs.values()] + [len(r.gbytes_per_second)]
    return max(counts, default=0)


def goals_table(verdicts: Sequence[Verdict], baseline_label: str | None) -> list[str]:
    head = "| measure | Gossamer: median (min-max) | goal | met |"
    rule = "|---|---|---|---|"
    if baseline_label:
        head += f" ÷ {baseline_label} |"
        rule += "---|"
    lines = ["## Goals (issues 21 and 19)", "", head, rule]
    noisy: list[str] = []
    for v in verdicts:
        goal = v.goal
        if v.measured is None:
            measured, mark = "not measured", "—"
        else:
            digits = 0 if goal.unit.strip() in ("MB", "") else 2
            measured = v.measured.format(digits, goal.unit)
            if goal.reference:
                measured += f" of {goal.reference.capitalize()}"
            mark = "✓" if v.met else "✗"
            if v.too_many_errors and v.errors is not None:
                mark += f" errors {v.errors.rate:.2%} > {ERROR_RATE_LIMIT:.1%}"
            elif v.noisy:
                mark += " ⚠"
                noisy.append(goal.title)
        row = f"| {goal.title} | {measured} | {goal.wanted} | {mark} |"
        if baseline_label:
            if v.baseline is None:
                row += " — |"
            else:
                row += f" {v.baseline.format()} {'✓' if v.baseline_ok else '✗ worse by >5%'} |"
        lines.append(row)
    lines.append("")
    if noisy:
        lines.append(
            "⚠ The rounds' range is wider than the gap between the median and the goal, so "
            "another run could give the other verdict: " + "; ".join(noisy) + "."
        )
        lines.append("")
    return lines


def _requests_table(rows: Sequence[TargetResult], by: Targets) -> list[str]:
    direct, envoy = by.get("direct"), by.get("envoy")
    lines = [
        "| target | rps c=64 | rps ÷ Envoy | p50 c=1 | p99 c=1 | added p50 c=1 "
        "| added p50 ÷ Envoy | p50 c=16 | p99 c=16 | p50 c=64 | p99 c=64 | p99 c=64 ÷ Envoy "
        "| CPU s /10k req | peak RSS | errors c=1 / c=16 / c=64 | rounds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    envoy_added = _added(envoy, direct, 1, "p50_us")
    for r in rows:
        c1, c16, c64 = median_run(r, 1), median_run(r, 16), median_run(r, 64)
        added = _added(r, direct, 1, "p50_us") if r is not direct else []
        added_ratio = (
            _spread([a / e for a, e in zip(added, envoy_added, strict=False) if e])
            if r is not envoy and r is not direct
            else "—"
        )
        lines.append(
            f"| {r.name} | {_num(c64.rps if c64 else None, 0)} "
            f"| {_ratio_to(r, envoy, 64, 'rps')} "
            f"| {_fmt_us(c1.p50_us if c1 else None)} | {_fmt_us(c1.p99_us if c1 else None)} "
            f"| {_fmt_us(_median(added))} | {added_ratio} "
            f"| {_fmt_us(c16.p50_us if c16 else None)} | {_fmt_us(c16.p99_us if c16 else None)} "
            f"| {_fmt_us(c64.p50_us if c64 else None)} | {_fmt_us(c64.p99_us if c64 else None)} "
            f"| {_ratio_to(r, envoy, 64, 'p99_us')} "
            f"| {_num(_median(r.cpu_seconds_per_10k), 3)} | {_rss(r)} | {_row_errors(r)} "
            f"| {_rounds(r)} |" + _err(r)
        )
    return lines


def _row_errors(r: TargetResult, rows: Sequence[int] = (1, 16, 64)) -> str:
    """Each row's failed requests over all rounds, with their share; ⚠ above the limit."""
    return " / ".join(
        "—" if errors is None else errors.format() for errors in map(r.row_errors, rows)
    )


def flagged_rows(rows: Sequence[TargetResult]) -> list[str]:
    """``target c=N`` for every row whose errors exceed :data:`ERROR_RATE_LIMIT`."""
    return [
        f"{r.name} c={c}"
        for r in rows
        for c in sorted(r.runs)
        if (errors := r.row_errors(c)) is not None and errors.flagged
    ]


def _errors_note(topology: str, rows: Sequence[TargetResult]) -> list[str]:
    if topology.startswith("grpc"):
        text = (
            "rps counts successful calls only. h2load counts any 2xx :status as a success, so "
            "a proxy's gRPC error (grpc-status ≠ 0 in trailers with :status 200) would pass; a "
            "call counts as failed when h2load saw a 4xx/5xx :status or a reset stream, when "
            "its answer carried no reply message (h2load's DATA bytes ÷ the echoed message's "
            "size: a trailers-only error has none), or when the gRPC backend never answered it "
            "OK (calls completed minus the calls the backend counted during the row). The "
            "largest of the three counts is taken; each is a lower bound."
        )
    else:
        text = "Errors are wrk's socket errors plus non-2xx answers; rps counts every answer."
    text += (
        f" Errors are summed over the rounds, with their share of the row's requests; a row "
        f"above {ERROR_RATE_LIMIT:.1%} is flagged ⚠ and an rps goal measured on it is not met."
    )
    lines = ["", text, *_proxy_failures(rows)]
    flagged = flagged_rows(rows)
    if flagged:
        lines += ["", f"⚠ Errors above {ERROR_RATE_LIMIT:.1%}: " + ", ".join(flagged) + "."]
    return lines


def _proxy_failures(rows: Sequence[TargetResult]) -> list[str]:
    """Gossamer's own count of failed responses per row, as a cross-check of the errors."""
    counted: list[str] = []
    for r in rows:
        for c in sorted(r.runs):
            by_proxy: dict[str, Counter[str]] = {}
            for run in r.runs[c]:
                for proxy, reasons in (run.proxy_failures or {}).items():
                    by_proxy.setdefault(proxy, Counter()).update(reasons)
            if not by_proxy:
                continue
            text = "; ".join(
                f"{proxy} {sum(reasons.values()):,}"
                + (
                    " (" + ", ".join(f"{k}: {v:,}" for k, v in reasons.most_common()) + ")"
                    if reasons
                    else ""
                )
                for proxy, reasons in by_proxy.items()
            )
            counted.append(f"{r.name} c={c}: {text}")
    if not counted:
        return []
    return [
        "",
        "Gossamer's own count of the responses it failed "
        '(`response_total{classification="failure"}` on each proxy\'s admin port, all rounds; '
        "one failed call can count on both proxies): " + " · ".join(counted) + ".",
    ]


def _cold_table(rows: Sequence[TargetResult], by: Targets) -> list[str]:
    envoy = by.get("envoy")
    lines = [
        "| target | rps c=64 | p50 c=64 | p99 c=64 | p99 ÷ Envoy | p999 c=64 | errors "
        "| peak RSS | rounds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c64 = median_run(r, 64)
        lines.append(
            f"| {r.name} | {_num(c64.rps if c64 else None, 0)} "
            f"| {_fmt_us(c64.p50_us if c64 else None)} | {_fmt_us(c64.p99_us if c64 else None)} "
            f"| {_ratio_to(r, envoy, 64, 'p99_us')} "
            f"| {_fmt_us(c64.p999_us if c64 else None)} | {c64.errors if c64 else '—'} "
            f"| {_rss(r)} | {_rounds(r)} |" + _err(r)
        )
    return lines


def _tcp_table(rows: Sequence[TargetResult], by: Targets) -> list[str]:
    envoy = by.get("envoy")
    lines = [
        "| target | GB/s | ÷ Envoy | CPU s per GB | peak RSS | rounds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = (
            _spread(paired_ratios(list(r.gbytes_per_second), list(envoy.gbytes_per_second)))
            if envoy is not None and envoy is not r
            else "—"
        )
        lines.append(
            f"| {r.name} | {_num(_median(r.gbytes_per_second))} | {ratio} "
            f"| {_num(_median(r.cpu_seconds_per_10k))} | {_rss(r)} | {_rounds(r)} |" + _err(r)
        )
    return lines


def _tap_seen(r: TargetResult) -> str:
    if not r.tap_seen:
        return "—"
    requests = sum(s.requests for s in r.tap_seen)
    inits = sum(s.request_inits for s in r.tap_seen)
    events = sum(s.events for s in r.tap_seen)
    dropped = sum(s.dropped_events for s in r.tap_seen)
    share = f" ({dropped / (3 * requests):.1%})" if requests else ""
    broken = [s.error for s in r.tap_seen if s.error]
    text = f"{inits:,} of {requests:,} requests, {events:,} events, {dropped:,} dropped{share}"
    return text + (f"; stream broke: {broken[0]}" if broken else "")


def _tap_table(rows: Sequence[TargetResult], by: Targets) -> list[str]:
    off = by.get("tap-off")
    lines = [
        "| target | rps c=64 | rps ÷ tap-off | p50 c=1 | p99 c=1 | p50 c=64 | p99 c=64 "
        "| CPU s /10k req | CPU ÷ tap-off | errors c=64 | tap client saw (all rounds) | rounds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c1, c64 = median_run(r, 1), median_run(r, 64)
        cpu_ratio = (
            _spread(paired_ratios(list(r.cpu_seconds_per_10k), list(off.cpu_seconds_per_10k)))
            if off is not None and off is not r
            else "—"
        )
        lines.append(
            f"| {r.name} | {_num(c64.rps if c64 else None, 0)} "
            f"| {_ratio_to(r, off, 64, 'rps')} "
            f"| {_fmt_us(c1.p50_us if c1 else None)} | {_fmt_us(c1.p99_us if c1 else None)} "
            f"| {_fmt_us(c64.p50_us if c64 else None)} | {_fmt_us(c64.p99_us if c64 else None)} "
            f"| {_num(_median(r.cpu_seconds_per_10k), 3)} | {cpu_ratio} "
            f"| {c64.errors if c64 else '—'} | {_tap_seen(r)} | {_rounds(r)} |" + _err(r)
        )
    lines += [
        "",
        "`gossamer`: tap served (LINKERD2_PROXY_TAP_SVC_NAME set, control port listening), "
        "nobody tapping. `tapped`: the same, with a tap client (the tap identity, mTLS) "
        "observing every request of the c=64 row; the proxy drops tap events its bounded "
        "queue cannot hold, never requests. The tap client runs on the load CPU beside wrk "
        "(the machine has no third CPU), so its own work lowers `tapped`'s rps too. Errors are "
        "wrk's errors plus non-2xx answers, summed over the rounds.",
    ]
    return lines


def _total_rss(r: TargetResult) -> str:
    total = r.total_rss_mb()
    if total is None:
        return "—"
    if len(r.peak_rss_mb) == 1:
        return f"{total:.0f} MB"
    return f"{total:.0f} MB ({_rss(r)})"


def _format_spread(spread: Spread | None) -> str:
    return "—" if spread is None else spread.format()


def multicore_section(by: Targets, check: ScalingCheck) -> list[str]:
    """The scaling figure of each setup, then every target's figures at c=64.

    Figures are summed over each target's processes: a proxy's parent and its workers, and
    both proxies of a pair.
    """
    n = check.cores
    lines = [
        f"Setup: {check.setup}. Gossamer runs with `LINKERD2_PROXY_CORES={n}` (a parent and "
        f"{n - 1} worker process{'es' if n > 2 else ''} sharing the listeners) and with 1 core; "
        f"Envoy with `--concurrency {n}` and 1; wrk (one thread, c=64) and nginx as the backend. "
        f"On a {n}-core machine the load generator and the backend compete with the proxy for "
        "the same CPUs, so these figures are a scaling check, not a per-core ratio: issue "
        "21's per-core goals are measured pinned in the other sections and this section "
        "counts toward none of them. CPU and peak RSS are summed over every process of the "
        "target (parent and workers; both proxies of a pair); RSS summed this way counts "
        "pages the processes share once per process.",
        "",
    ]
    for s in check.sets:
        lines.append(
            f"- Scaling, {s.title}, rps at c=64 (paired by round): Gossamer {n} cores ÷ 1 core "
            f"**{_format_spread(rps_ratio(by, s.many, s.one, 64))}**; Envoy {n} workers ÷ 1, "
            f"on the same machine: {_format_spread(rps_ratio(by, s.envoy, s.envoy_one, 64))}; "
            f"Gossamer {n} cores ÷ Envoy {n} workers: "
            f"{_format_spread(rps_ratio(by, s.many, s.envoy, 64))}"
        )
    lines += [
        "",
        "| setup | target | cores | processes | rps c=64 | ÷ same proxy at 1 core "
        "| ÷ Envoy at as many cores | p50 c=64 | p99 c=64 | CPU s /10k req | peak RSS, summed "
        "| rounds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    placed: set[str] = set()
    rows: list[tuple[str, TargetResult, str, str, str]] = []
    for s in check.sets:
        # each target: how many cores, the same proxy at one core, Envoy at as many cores
        compared = (
            (s.many, str(n), s.one, s.envoy),
            (s.one, "1", None, s.envoy_one),
            (s.envoy, f"{n} workers", s.envoy_one, None),
            (s.envoy_one, "1 worker", None, None),
        )
        for name, cores, one, envoy in compared:
            r = by.get(name)
            if r is None:
                continue
            placed.add(name)
            to_one = _ratio_to(r, by.get(one), 64, "rps") if one else "—"
            to_envoy = _ratio_to(r, by.get(envoy), 64, "rps") if envoy else "—"
            rows.append((s.title, r, cores, to_one, to_envoy))
    rows += [("—", r, "—", "—", "—") for name, r in by.items() if name not in placed]
    for title, r, cores, to_one, to_envoy in rows:
        c64 = median_run(r, 64)
        processes = sum(r.processes.values()) if r.processes else None
        lines.append(
            f"| {title} | {r.name} | {cores} | {processes if processes else '—'} "
            f"| {_num(c64.rps if c64 else None, 0)} | {to_one} | {to_envoy} "
            f"| {_fmt_us(c64.p50_us if c64 else None)} | {_fmt_us(c64.p99_us if c64 else None)} "
            f"| {_num(_median(r.cpu_seconds_per_10k), 3)} | {_total_rss(r)} | {_rounds(r)} |"
            + _err(r)
        )
    return lines


def markdown(
    by_topology: Mapping[str, Targets],
    titles: Mapping[str, str],
    meta: Mapping[str, Any],
    verdicts: Sequence[Verdict] = (),
    baseline_label: str | None = None,
    scaling: Mapping[str, ScalingCheck] | None = None,
) -> str:
    """The report; topologies in ``scaling`` are multi-core ones (:func:`multicore_section`)."""
    lines = ["# Gossamer benchmark", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines.append("")
    if verdicts:
        lines += goals_table(verdicts, baseline_label)
    for topology, title in titles.items():
        by = by_topology.get(topology)
        if not by:
            continue
        rows = list(by.values())
        lines += [f"## {title} (`{topology}`)", ""]
        check = (scaling or {}).get(topology)
        if check is not None:
            lines += multicore_section(by, check)
        elif topology == "tcp":
            lines += _tcp_table(rows, by)
        elif topology == "tap":
            lines += _tap_table(rows, by)
        elif topology.endswith("-cold"):
            lines += _cold_table(rows, by)
        else:
            lines += _requests_table(rows, by)
            lines += _errors_note(topology, rows)
        lines.append("")
    return "\n".join(lines) + "\n"


def write_json(by_topology: Mapping[str, Targets], meta: Mapping[str, Any], path: Path) -> None:
    data = {
        "meta": dict(meta),
        "results": [asdict(r) for by in by_topology.values() for r in by.values()],
    }
    path.write_text(json.dumps(data, indent=2, default=str))


def _median_or_zero(run: LoadResult | None, key: str, scale: float = 1.0) -> float:
    return float(getattr(run, key)) / scale if run is not None else 0.0


def plots(
    by_topology: Mapping[str, Targets], titles: Mapping[str, str], outdir: Path
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    for topology, title in titles.items():
        rows = [r for r in by_topology.get(topology, {}).values() if r.runs or r.gbytes_per_second]
        if not rows:
            continue
        if topology == "tcp":
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.bar([r.name for r in rows], [_median(r.gbytes_per_second) or 0 for r in rows])
            ax.set_ylabel("GB/s (median of rounds)")
            ax.set_title(title)
        else:
            fig, (lat, thr) = plt.subplots(1, 2, figsize=(12, 4.5))
            counts = sorted({c for r in rows for c in r.runs})
            labels = [f"{p} c={c}" for c in counts for p in ("p50", "p99", "p999")]
            width = 0.8 / len(rows)
            for i, r in enumerate(rows):
                values = []
                for c in counts:
                    run = median_run(r, c)
                    values += [
                        _median_or_zero(run, k, 1000) for k in ("p50_us", "p99_us", "p999_us")
                    ]
                lat.bar([x + i * width for x in range(len(labels))], values, width, label=r.name)
            lat.set_xticks([x + width * (len(rows) - 1) / 2 for x in range(len(labels))], labels)
            lat.set_ylabel("latency (ms, median of rounds)")
            lat.set_yscale("log")
            lat.set_title(f"{title}: latency percentiles")
            lat.legend()
            thr.bar(
                [r.name for r in rows], [_median_or_zero(median_run(r, 64), "rps") for r in rows]
            )
            thr.set_ylabel("requests/s at 64 connections")
            thr.set_title(f"{title}: throughput")
        fig.tight_layout()
        path = outdir / f"{topology}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
