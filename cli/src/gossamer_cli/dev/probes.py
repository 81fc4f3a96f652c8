"""Kubernetes probes (httpGet, tcpSocket, exec) run from the node against a pod."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProbeSpec:
    kind: str  # "http" | "tcp" | "exec" | "grpc"
    port: int = 0
    path: str = "/"
    command: tuple[str, ...] = ()
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1


class ProbeError(ValueError):
    """A probe names a port the container does not have, or has no handler."""


def parse_probe(probe: Mapping[str, Any], ports: Sequence[Mapping[str, Any]]) -> ProbeSpec:
    if "httpGet" in probe:
        spec = probe["httpGet"]
        kind, port, path = "http", resolve_port(spec["port"], ports), spec.get("path", "/")
        command: tuple[str, ...] = ()
    elif "tcpSocket" in probe:
        kind, port, path, command = "tcp", resolve_port(probe["tcpSocket"]["port"], ports), "/", ()
    elif "grpc" in probe:
        kind, port, path, command = "tcp", int(probe["grpc"]["port"]), "/", ()
    elif "exec" in probe:
        kind, port, path, command = "exec", 0, "/", tuple(probe["exec"]["command"])
    else:
        raise ProbeError(f"probe has no handler: {dict(probe)}")
    return ProbeSpec(
        kind,
        port=port,
        path=path,
        command=command,
        initial_delay=float(probe.get("initialDelaySeconds", 0)),
        period=float(probe.get("periodSeconds", 10)),
        timeout=float(probe.get("timeoutSeconds", 1)),
        failure_threshold=int(probe.get("failureThreshold", 3)),
        success_threshold=int(probe.get("successThreshold", 1)),
    )


def resolve_port(port: int | str, ports: Sequence[Mapping[str, Any]]) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in ports:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ProbeError(f"no container port named {port!r}")


async def check(
    spec: ProbeSpec, pod_ip: str, run_exec: Callable[[Sequence[str], float], Awaitable[int]]
) -> bool:
    """One probe attempt; any error or timeout counts as failure, as with a kubelet."""
    try:
        if spec.kind == "exec":
            return await run_exec(spec.command, spec.timeout) == 0
        return await asyncio.wait_for(_network(spec, pod_ip), spec.timeout)
    except (OSError, TimeoutError, ValueError):
        return False


async def _network(spec: ProbeSpec, pod_ip: str) -> bool:
    reader, writer = await asyncio.open_connection(pod_ip, spec.port)
    try:
        if spec.kind == "tcp":
            return True
        request = (
            f"GET {spec.path} HTTP/1.1\r\nHost: {pod_ip}:{spec.port}\r\n"
            "User-Agent: kube-probe/1.30\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        line = await reader.readline()
        parts = line.split()
        return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
    finally:
        writer.close()
