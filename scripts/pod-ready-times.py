#!/usr/bin/env python3
"""How long each container of a local mesh took from its exec to its first passed readiness
probe, read from the mesh's log (``gossamer dev up`` JSON lines; the e2e suite keeps it at
``/var/tmp/<prefix>-mesh.log``).

    python3 scripts/pod-ready-times.py /var/tmp/gse123-mesh.log [--container linkerd-proxy]

Prints one line per start (a container restarted by its liveness probe counts again), then
the count, median, 90th percentile and maximum. Readiness is probed once a second until it
passes, after ``initialDelaySeconds`` (2 s for the proxy), so figures are that coarse.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
from pathlib import Path


def _when(event: dict[str, object]) -> float:
    return dt.datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp()


def ready_times(lines: list[str], container: str) -> list[tuple[str, float]]:
    started: dict[str, float] = {}
    result = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict) or event.get("container") != container:
            continue
        pod = str(event.get("pod"))
        if event.get("event") == "container started":
            started[pod] = _when(event)
        elif event.get("event") == "readiness probe passed" and pod in started:
            result.append((pod, _when(event) - started.pop(pod)))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--container", default="linkerd-proxy")
    args = parser.parse_args()
    times = ready_times(args.log.read_text(errors="replace").splitlines(), args.container)
    if not times:
        print(f"no {args.container} became ready in {args.log}", file=sys.stderr)
        return 1
    for pod, seconds in times:
        print(f"{seconds:7.2f}s  {pod}")
    values = sorted(s for _, s in times)
    p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
    print(
        f"n={len(values)} median={statistics.median(values):.2f}s p90={p90:.2f}s "
        f"max={values[-1]:.2f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
