"""Certificates signed per second by the identity service, with real TokenReview.

Starts the local test cluster (etcd, kube-apiserver, controller-manager, kwok), the identity
service as its own process on loopback, a pod with a bound ``identity.l5d.io`` token, then drives
Certify over gRPC with a fixed concurrency. Every request does the full work: CSR checks, a
TokenReview round trip to the apiserver, and an ECDSA P-256 signature.

    python -m bench.identity_bench [--requests 3000] [--concurrency 32] [--seconds 30]
                                   [--profile /tmp/identity.svg]

Every request presents the same token (one pod's). Real proxies each present their own, once per
certificate (about every 17 hours), so a TokenReview cache in the identity service would raise
this figure without helping a real cluster; Gossamer has none, and Linkerd has none either.

Bounded by both a request count and a wall-clock limit. Prints one JSON line with the rate and
the CPU each process used during the timed run (ms per certificate), because on a small machine
the apiserver, etcd and this client share the cores with the identity service: the rate is only
meaningful next to where the CPU went. ``--profile`` samples the identity process with py-spy
during the timed run (``.svg`` flame graph, ``.json`` speedscope, anything else raw).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from gossamer_api.proxy import identity_pb2, identity_pb2_grpc
from gossamer_kube.client import BoundPod, KubeClient, KubeConfig
from gossamer_kube.resources import NAMESPACES, PODS, SERVICEACCOUNTS
from gossamer_kube.testing.cluster import KubeTestCluster
from gossamer_tls import (
    build_csr,
    certificates_to_pem,
    generate_private_key,
    generate_trust_anchor_and_issuer,
    identity_name,
    private_key_to_pem,
)

NAMESPACE = "identity-bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (its threads included), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds spent not idle by the whole machine (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by named processes (and by the machine as a whole) between start and stop."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self._machine_before = machine_busy_seconds()

    def per_cert_ms(self, issued: int) -> dict[str, float]:
        used = {name: cpu_seconds(pid) - self._before[name] for name, pid in self.pids.items()}
        used["machine_total"] = machine_busy_seconds() - self._machine_before
        others = used["machine_total"] - sum(v for k, v in used.items() if k != "machine_total")
        used["everything_else"] = max(others, 0.0)
        return {name: round(1000 * seconds / max(issued, 1), 3) for name, seconds in used.items()}


def start_profiler(
    pid: int, output: Path, seconds: float, *, native: bool
) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` for at most ``seconds`` (stopped early with SIGINT).

    Native stacks (grpc core, OpenSSL, syscalls) need py-spy to pause the process for each
    sample, which slows it down; without them sampling is non-blocking and nearly free.
    """
    fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(output.suffix, "raw")
    py_spy = Path(sys.executable).with_name("py-spy")
    mode = ["--native", "--rate", "100"] if native else ["--nonblocking", "--rate", "250"]
    return subprocess.Popen(
        [str(py_spy), "record", "--pid", str(pid), "--output", str(output), "--format", fmt,
         "--duration", str(int(seconds) + 1), *mode],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_profiler(profiler: subprocess.Popen[bytes]) -> None:
    profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        profiler.wait(timeout=30)
    except subprocess.TimeoutExpired:
        profiler.kill()
        profiler.wait(timeout=10)


def _tail(log: Path | None) -> str:
    if log is None:
        return ""
    try:
        return ": " + log.read_text(errors="replace")[-1500:].strip()
    except OSError:
        return ""


def wait_ready(
    admin_port: int,
    process: subprocess.Popen[bytes],
    timeout: float = 60,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"identity exited with {process.returncode}{_tail(log)}")
        with contextlib.suppress(OSError):
            url = f"http://127.0.0.1:{admin_port}/ready"
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.1)
    raise TimeoutError(f"identity service never became ready{_tail(log)}")


async def mint_token(config: KubeConfig, node: str) -> str:
    async with KubeClient(config) as kube:
        await kube.create(NAMESPACES, {"metadata": {"name": NAMESPACE}})
        await kube.create(SERVICEACCOUNTS, {"metadata": {"name": "web"}}, NAMESPACE)
        for _ in range(100):  # the ServiceAccount admission cache may lag a moment
            try:
                pod = await kube.create(
                    PODS,
                    {
                        "metadata": {"name": "web-0"},
                        "spec": {
                            "serviceAccountName": "web",
                            "nodeName": node,
                            "containers": [{"name": "app", "image": "example.invalid/app:1"}],
                        },
                    },
                    NAMESPACE,
                )
                break
            except Exception:
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError("could not create the bench pod")
        return await kube.token_request(
            NAMESPACE, "web", ["identity.l5d.io"], 3600, bound_pod=BoundPod.of(pod)
        )


async def drive(
    address: str,
    identity: str,
    token: str,
    *,
    requests: int,
    concurrency: int,
    seconds: float,
    on_start: Callable[[], None],
) -> dict[str, float]:
    csrs = [build_csr(generate_private_key(), identity) for _ in range(16)]
    done = failed = started_count = 0
    deadline = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(address) as channel:
        stub = identity_pb2_grpc.IdentityStub(channel)

        async def worker(index: int) -> None:
            nonlocal done, failed, started_count
            i = index
            while started_count < requests and time.monotonic() < deadline:
                started_count += 1  # claimed before the await, so the total never overshoots
                request = identity_pb2.CertifyRequest(
                    identity=identity,
                    token=token.encode(),
                    certificate_signing_request=csrs[i % len(csrs)],
                )
                i += concurrency
                try:
                    await stub.Certify(request, timeout=30)
                    done += 1
                except grpc.aio.AioRpcError:
                    failed += 1

        # Warm-up outside the timing, at full concurrency so that the identity service's
        # keep-alive pool to the apiserver already holds as many connections as the run needs.
        await asyncio.gather(
            *(
                stub.Certify(
                    identity_pb2.CertifyRequest(
                        identity=identity,
                        token=token.encode(),
                        certificate_signing_request=csrs[i % len(csrs)],
                    ),
                    timeout=30,
                )
                for i in range(2 * concurrency)
            )
        )
        on_start()
        started = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.monotonic() - started
    return {"issued": done, "failed": failed, "seconds": round(elapsed, 3),
            "certs_per_second": round(done / elapsed, 1) if elapsed else 0.0}  # fmt: skip


def measure(
    cluster: KubeTestCluster,
    root: Path,
    *,
    requests: int = 3000,
    concurrency: int = 32,
    seconds: float = 30.0,
    profile: Path | None = None,
    native: bool = False,
) -> dict[str, Any]:
    """Run the identity service against ``cluster`` and drive Certify; the result summary.

    ``root`` is a scratch directory for the issuer files and the service's log.
    """
    trust = generate_trust_anchor_and_issuer(
        trust_domain="cluster.local", control_plane_namespace="gossamer",
        now=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    (root / "issuer").mkdir()
    (root / "ca-bundle.crt").write_bytes(certificates_to_pem([trust.trust_anchor.certificate]))
    (root / "issuer" / "crt.pem").write_bytes(certificates_to_pem([trust.issuer.certificate]))
    (root / "issuer" / "key.pem").write_bytes(private_key_to_pem(trust.issuer.private_key))
    grpc_port, admin_port = free_port(), free_port()
    log = (root / "identity.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "gossamer_identity",
            f"--kubeconfig={cluster.kubeconfig}",
            f"--addr=127.0.0.1:{grpc_port}", f"--admin-addr=127.0.0.1:{admin_port}",
            f"--issuer={root / 'issuer'}", f"--trust-anchors-path={root / 'ca-bundle.crt'}",
            "--log-level=warn",
        ],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ},
    )  # fmt: skip
    try:
        wait_ready(admin_port, process, log=root / "identity.log")
        token = asyncio.run(mint_token(cluster.config, cluster.node_name))
        identity = identity_name(
            "web", NAMESPACE, control_plane_namespace="gossamer", trust_domain="cluster.local"
        )
        pids = {"identity": process.pid, "bench_client": os.getpid()}
        pids.update({proc.name: proc.record.pid for proc in cluster.processes})
        meter: list[CpuMeter] = []
        profiler: list[subprocess.Popen[bytes]] = []

        def on_start() -> None:  # after the warm-up, right before the timed run
            if profile is not None:
                profiler.append(start_profiler(process.pid, profile, seconds, native=native))
            meter.append(CpuMeter(pids))

        try:
            result = asyncio.run(
                drive(
                    f"127.0.0.1:{grpc_port}", identity, token, requests=requests,
                    concurrency=concurrency, seconds=seconds, on_start=on_start,
                )
            )  # fmt: skip
        finally:
            for running in profiler:
                stop_profiler(running)
        cpu = meter[0].per_cert_ms(int(result["issued"]))
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
    return {
        "benchmark": "identity_certify",
        "concurrency": concurrency,
        **result,
        "identity_cpu_ms_per_cert": cpu["identity"],
        "cpu_ms_per_cert": cpu,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.identity_bench")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--profile", type=Path, default=None, help="py-spy output file")
    parser.add_argument("--native", action="store_true", help="profile native frames too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="identity-bench-") as tmp, KubeTestCluster() as cluster:
        summary = measure(
            cluster, Path(tmp), requests=args.requests, concurrency=args.concurrency,
            seconds=args.seconds, profile=args.profile, native=args.native,
        )  # fmt: skip
    print(json.dumps(summary))
    return 0 if summary["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
