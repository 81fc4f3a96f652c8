"""``gossamer viz check``: is the extension's Prometheus up and scraping the proxies? (pure)

The figures are read by the command; :func:`judge` turns them into Linkerd-style results,
one per check, each with a hint when it fails.
"""

from __future__ import annotations

from dataclasses import dataclass

from gossamer_cli.viz.promapi import Sample
from gossamer_cli.viz.scrape import PROXY_JOB

OK_MARK, WARN_MARK, FAIL_MARK = "\u221a", "\u203c", "\u00d7"
TARGETS_QUERY = f'up{{job="{PROXY_JOB}"}}'


@dataclass(frozen=True)
class Result:
    description: str
    ok: bool
    warning: bool = False
    hint: str = ""


def judge(prometheus_url: str, ready: bool, targets: list[Sample] | None) -> list[Result]:
    results = [
        Result(
            "prometheus is reachable and ready",
            ready,
            hint=f"nothing ready at {prometheus_url}: is the viz extension installed "
            "(`gossamer viz install`), or local mode running?",
        )
    ]
    if not ready or targets is None:
        return results
    results.append(
        Result(
            "prometheus finds the data-plane proxies",
            bool(targets),
            warning=True,
            hint="no meshed pod with a linkerd-admin port: inject a workload first",
        )
    )
    down = sorted(
        f"{s.labels.get('namespace', '?')}/{s.labels.get('pod', '?')}"
        for s in targets
        if s.value != 1
    )
    if targets:
        results.append(
            Result(
                "prometheus scrapes every proxy",
                not down,
                hint="scrapes failing for: " + ", ".join(down[:10]),
            )
        )
    return results


def render(results: list[Result]) -> str:
    lines = ["gossamer-viz", "------------"]
    for r in results:
        mark = OK_MARK if r.ok else (WARN_MARK if r.warning else FAIL_MARK)
        lines.append(f"{mark} {r.description}")
        if not r.ok and r.hint:
            lines.append(f"    {r.hint}")
    failed = any(not r.ok and not r.warning for r in results)
    lines.append("")
    lines.append("Status check results are " + (FAIL_MARK if failed else OK_MARK))
    return "\n".join(lines)


def failed(results: list[Result]) -> bool:
    return any(not r.ok and not r.warning for r in results)
