"""Turning measured rows into the markdown table, the JSON file and the PNG plots."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import LoadResult


@dataclass
class TargetResult:
    """Everything measured for one target of one topology."""

    topology: str
    target: str
    runs: dict[int, LoadResult] = field(default_factory=dict)  # by connection count
    cpu_seconds_per_10k: float | None = None
    peak_rss_mb: dict[str, float] = field(default_factory=dict)  # by process name
    gbytes_per_second: float | None = None
    error: str | None = None


def _fmt_us(us: float | None) -> str:
    if us is None:
        return "—"
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "—"
    return f"{value / reference:.2f}x"


def _run(result: TargetResult, connections: int) -> LoadResult | None:
    return result.runs.get(connections)


def markdown(results: list[TargetResult], titles: dict[str, str], meta: dict[str, Any]) -> str:
    lines = ["# Gossamer benchmark", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines.append("")
    for topology, title in titles.items():
        rows = [r for r in results if r.topology == topology]
        if not rows:
            continue
        by_target = {r.target: r for r in rows}
        lines += [f"## {title} (`{topology}`)", ""]
        if topology == "tcp":
            lines += [
                "| target | GB/s | ÷ Envoy | CPU s per GB | peak RSS |",
                "|---|---|---|---|---|",
            ]
            envoy = by_target.get("envoy")
            for r in rows:
                lines.append(
                    f"| {r.target} | {_num(r.gbytes_per_second)} | "
                    f"{_ratio(r.gbytes_per_second, envoy.gbytes_per_second if envoy else None)} | "
                    f"{_num(r.cpu_seconds_per_10k)} | {_rss(r)} |" + _err(r)
                )
            lines.append("")
            continue
        direct = by_target.get("direct")
        envoy = by_target.get("envoy")
        lines += [
            "| target | rps c=64 | rps ÷ Envoy | p50 c=1 | p99 c=1 | p999 c=1 | added p50 c=1 "
            "| added p50 ÷ Envoy | p50 c=16 | p99 c=16 | p999 c=16 | added p99 c=1 "
            "| CPU s /10k req | peak RSS |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        envoy_added = _added(envoy, direct, 1, "p50_us")
        for r in rows:
            c1, c16, c64 = _run(r, 1), _run(r, 16), _run(r, 64)
            added = _added(r, direct, 1, "p50_us")
            lines.append(
                f"| {r.target} | {_num(c64.rps if c64 else None, 0)} "
                f"| {_ratio(c64.rps if c64 else None, _rps(envoy, 64))} "
                f"| {_fmt_us(c1.p50_us if c1 else None)} | {_fmt_us(c1.p99_us if c1 else None)} "
                f"| {_fmt_us(c1.p999_us if c1 else None)} | {_fmt_us(added)} "
                f"| {_ratio(added, envoy_added) if r.target != 'direct' else '—'} "
                f"| {_fmt_us(c16.p50_us if c16 else None)} "
                f"| {_fmt_us(c16.p99_us if c16 else None)} "
                f"| {_fmt_us(c16.p999_us if c16 else None)} "
                f"| {_fmt_us(_added(r, direct, 1, 'p99_us'))} "
                f"| {_num(r.cpu_seconds_per_10k, 3)} | {_rss(r)} |" + _err(r)
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def _added(r: TargetResult | None, direct: TargetResult | None, c: int, key: str) -> float | None:
    if r is None or direct is None or r.target == "direct":
        return None
    mine, base = _run(r, c), _run(direct, c)
    if mine is None or base is None:
        return None
    return float(getattr(mine, key) - getattr(base, key))


def _rps(r: TargetResult | None, c: int) -> float | None:
    run = _run(r, c) if r else None
    return run.rps if run else None


def _num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _rss(r: TargetResult) -> str:
    if not r.peak_rss_mb:
        return "—"
    return ", ".join(f"{name} {mb:.0f} MB" for name, mb in r.peak_rss_mb.items())


def _err(r: TargetResult) -> str:
    return f" failed: {r.error}" if r.error else ""


def write_json(results: list[TargetResult], meta: dict[str, Any], path: Path) -> None:
    data = {"meta": meta, "results": [asdict(r) for r in results]}
    path.write_text(json.dumps(data, indent=2, default=str))


def plots(results: list[TargetResult], titles: dict[str, str], outdir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    for topology, title in titles.items():
        rows = [r for r in results if r.topology == topology and not r.error]
        if not rows:
            continue
        if topology == "tcp":
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.bar([r.target for r in rows], [r.gbytes_per_second or 0 for r in rows])
            ax.set_ylabel("GB/s")
            ax.set_title(title)
        else:
            fig, (lat, thr) = plt.subplots(1, 2, figsize=(12, 4.5))
            labels = ["p50 c=1", "p99 c=1", "p999 c=1", "p50 c=16", "p99 c=16", "p999 c=16"]
            width = 0.8 / len(rows)
            for i, r in enumerate(rows):
                values = []
                for c in (1, 16):
                    run = _run(r, c)
                    values += (
                        [run.p50_us / 1000, run.p99_us / 1000, run.p999_us / 1000]
                        if run
                        else [0, 0, 0]
                    )
                lat.bar([x + i * width for x in range(len(labels))], values, width, label=r.target)
            lat.set_xticks([x + width * (len(rows) - 1) / 2 for x in range(len(labels))], labels)
            lat.set_ylabel("latency (ms)")
            lat.set_yscale("log")
            lat.set_title(f"{title}: latency percentiles")
            lat.legend()
            thr.bar([r.target for r in rows], [(_rps(r, 64) or 0) for r in rows])
            thr.set_ylabel("requests/s at 64 connections")
            thr.set_title(f"{title}: throughput")
        fig.tight_layout()
        path = outdir / f"{topology}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
