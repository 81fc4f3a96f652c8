"""``make demo``: the demo app, meshed, with a live per-deployment table from proxy metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from gossamer_kube.resources import PODS

from gossamer_cli.dev import promtext, table
from gossamer_cli.dev.mesh import REPO, LocalMesh

DEMO_DIR = REPO / "examples" / "demo"
DEMO_NAMESPACE = "demo"
ADMIN_PORT = 4191


def deployment_of(pod: dict[str, Any]) -> str:
    labels = pod["metadata"].get("labels") or {}
    return str(labels.get("linkerd.io/proxy-deployment") or labels.get("app") or "?")


async def deploy(mesh: LocalMesh) -> None:
    await mesh.apply_files(sorted((DEMO_DIR / "k8s").glob("*.yaml")))


async def ready_pods(mesh: LocalMesh) -> list[dict[str, Any]]:
    pods, _ = await mesh.kube.list(PODS, DEMO_NAMESPACE)
    return [
        p
        for p in pods
        if (p.get("status") or {}).get("podIP")
        and not p["metadata"].get("deletionTimestamp")
        and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
    ]


async def scrape(session: aiohttp.ClientSession, ip: str) -> dict[str, table.Counters]:
    try:
        async with session.get(f"http://{ip}:{ADMIN_PORT}/metrics") as response:
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return {}
    return table.counters_by_direction(promtext.parse(text))


async def live_table(
    mesh: LocalMesh, stop: asyncio.Event, emit: Callable[[str], None], interval: float = 1.0
) -> None:
    """Print the table every ``interval`` seconds until ``stop`` is set."""
    previous: dict[str, dict[str, table.Counters]] = {}
    last = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            pods = await ready_pods(mesh)
            scraped = await asyncio.gather(*(scrape(session, p["status"]["podIP"]) for p in pods))
            now = time.monotonic()
            window: dict[tuple[str, str], table.Counters] = defaultdict(table.Counters)
            counts: dict[str, int] = defaultdict(int)
            current: dict[str, dict[str, table.Counters]] = {}
            for pod, by_direction in zip(pods, scraped, strict=True):
                uid, name = pod["metadata"]["uid"], deployment_of(pod)
                counts[name] += 1
                current[uid] = by_direction
                before = previous.get(uid, {})
                for direction, counters in by_direction.items():
                    if direction in before:
                        window[(name, direction)].add(counters.minus(before[direction]))
            rows = []
            for name in sorted(counts):
                inbound = window.get((name, "inbound"))
                direction = "inbound" if inbound is not None and inbound.requests else "outbound"
                chosen = window.get((name, direction), table.Counters())
                rows.append(table.row(name, counts[name], chosen, now - last, direction))
            previous, last = current, now
            title = f"gossamer demo · {time.strftime('%H:%M:%S')} · Ctrl-C stops"
            emit(table.render(rows, title))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)


def image_map() -> Path:
    return DEMO_DIR / "local-images.yaml"
