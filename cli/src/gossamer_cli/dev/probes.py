"""Kubernetes probes (httpGet, tcpSocket, exec) run from the node against a pod.

:func:`check` answers with a :class:`ProbeResult` that says why a probe failed (connection
refused, timed out, HTTP status, exec exit code...), as a kubelet's event would, so that a
pod whose probes fail can be diagnosed from the runtime's log.
"""

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


@dataclass(frozen=True)
class ProbeResult:
    """One probe attempt: whether it passed and, when it did not, why."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


PASSED = ProbeResult(True)


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


def target(spec: ProbeSpec, pod_ip: str) -> str:
    """What the probe checks, for log lines: ``http://ip:port/path``, ``tcp ip:port``..."""
    if spec.kind == "exec":
        return "exec " + " ".join(spec.command)
    if spec.kind == "http":
        return f"http://{pod_ip}:{spec.port}{spec.path}"
    return f"tcp {pod_ip}:{spec.port}"


async def check(
    spec: ProbeSpec, pod_ip: str, run_exec: Callable[[Sequence[str], float], Awaitable[int]]
) -> ProbeResult:
    """One probe attempt; any error or timeout counts as failure, as with a kubelet."""
    if spec.kind == "exec":
        try:
            code = await run_exec(spec.command, spec.timeout)
        except OSError as exc:
            return ProbeResult(False, f"exec failed: {_describe(exc)}")
        if code == 0:
            return PASSED
        if code == -1:  # how the runner reports a command it had to kill at the timeout
            return ProbeResult(False, f"exec timed out after {spec.timeout:g}s")
        if code < 0:
            return ProbeResult(False, f"exec killed by signal {-code}")
        return ProbeResult(False, f"exec exited with code {code}")
    try:
        return await asyncio.wait_for(_network(spec, pod_ip), spec.timeout)
    except TimeoutError:
        return ProbeResult(False, f"timed out after {spec.timeout:g}s")
    except (OSError, ValueError) as exc:
        return ProbeResult(False, _describe(exc))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _network(spec: ProbeSpec, pod_ip: str) -> ProbeResult:
    reader, writer = await asyncio.open_connection(pod_ip, spec.port)
    try:
        if spec.kind == "tcp":
            return PASSED
        request = (
            f"GET {spec.path} HTTP/1.1\r\nHost: {pod_ip}:{spec.port}\r\n"
            "User-Agent: kube-probe/1.30\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        line = await reader.readline()
        return http_verdict(line)
    finally:
        writer.close()


def http_verdict(status_line: bytes) -> ProbeResult:
    """A kubelet's rule: a status from 200 to 399 passes; anything else, with the reason."""
    if not status_line:
        return ProbeResult(False, "connection closed before a response")
    parts = status_line.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        shown = status_line[:80].decode("latin-1").strip()
        return ProbeResult(False, f"malformed HTTP response: {shown!r}")
    code = int(parts[1])
    if 200 <= code < 400:
        return PASSED
    return ProbeResult(False, f"HTTP probe failed with statuscode: {code}")
