"""Certificates signed per second by the identity service, with real TokenReview.

Starts the local test cluster (etcd, kube-apiserver, controller-manager, kwok), the identity
service as its own process on loopback, a few pods (one per service account) and bound
``identity.l5d.io`` tokens for them, then drives Certify over gRPC with a fixed concurrency. Each
request does the identity service's full work: CSR checks, a TokenReview round trip to the
apiserver, and an ECDSA P-256 signature.

    python -m bench.identity_bench [--requests 3000] [--concurrency 32] [--seconds 30]
                                   [--tokens N] [--profile /tmp/identity.svg]

The apiserver caches successful token authentications for 10 s (kube-apiserver v1.30:
``TokenSuccessCacheTTL`` in pkg/kubeapiserver/options/authentication.go, no flag sets it; the
cache wraps every token authenticator in pkg/kubeapiserver/authenticator/config.go and the
TokenReview handler goes through it), keyed by token and audiences, with concurrent lookups of
one key coalesced. Real proxies each present their own token, once per certificate (about every
17 hours), so in a cluster every TokenReview misses that cache: the apiserver verifies the JWT
and looks up the bound pod and service account. By default the bench therefore mints one
distinct token per request (warm-up included) and presents them round-robin, so no token
repeats; ``--tokens N`` rotates through N tokens instead (``--tokens 1``: every request presents
the same token, almost all reviews are cache hits, the old optimistic figure). The result says
how many timed requests presented a token the apiserver may still have cached
(``token_repeats_within_cache_ttl``). Minting happens before the timed run.

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
import itertools
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
from dataclasses import dataclass
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


APISERVER_TOKEN_CACHE_TTL = 10.0  # seconds; kube-apiserver's TokenSuccessCacheTTL
MAX_SERVICE_ACCOUNTS = 16
MINT_CONCURRENCY = 8


def service_account_count(tokens: int) -> int:
    """Service accounts (one pod each) that ``tokens`` distinct tokens are spread over."""
    if tokens < 1:
        raise ValueError(f"need at least one token, not {tokens}")
    return min(tokens, MAX_SERVICE_ACCOUNTS)


def service_account_of(token_index: int, accounts: int) -> int:
    """Which service account token ``token_index`` is minted for (round-robin)."""
    return token_index % accounts


def token_for_request(sequence: int, tokens: int) -> int:
    """The token the ``sequence``-th request presents: round-robin, so that a token comes back
    only after every other token has been presented once (the longest possible gap)."""
    return sequence % tokens


def service_account_name(index: int) -> str:
    return f"web-{index}"


def bench_identity(account: int) -> str:
    """The identity a token of service account ``account`` entitles; its CSRs must name it."""
    return identity_name(
        service_account_name(account), NAMESPACE,
        control_plane_namespace="gossamer", trust_domain="cluster.local",
    )  # fmt: skip


class TokenRepeats:
    """Counts presentations of a token the apiserver may still hold in its success cache.

    A token counts as seen when a request presenting it starts (a concurrent lookup of the same
    token is coalesced with the one in flight) and again when that request completes (the cache
    entry lives ``ttl`` from then). Time is passed in.
    """

    def __init__(self, ttl: float = APISERVER_TOKEN_CACHE_TTL) -> None:
        self.ttl = ttl
        self.presented = 0
        self.repeats = 0
        self._last_seen: dict[int, float] = {}

    def present(self, token_index: int, now: float) -> bool:
        """A request presenting ``token_index`` starts; whether it may be a cache hit."""
        last = self._last_seen.get(token_index)
        repeat = last is not None and now - last < self.ttl
        self.presented += 1
        self.repeats += repeat
        self._last_seen[token_index] = now
        return repeat

    def completed(self, token_index: int, now: float) -> None:
        self._last_seen[token_index] = now

    def reset_counts(self) -> None:
        """Start counting afresh (after the warm-up), remembering when tokens were last seen."""
        self.presented = self.repeats = 0

    @property
    def repeat_fraction(self) -> float:
        return self.repeats / self.presented if self.presented else 0.0


@dataclass(frozen=True)
class Credential:
    """One token with the identity it entitles and a CSR naming that identity."""

    identity: str
    token: bytes
    csr: bytes


async def mint_credentials(config: KubeConfig, node: str, tokens: int) -> list[Credential]:
    """``tokens`` distinct bound tokens over :func:`service_account_count` service accounts."""
    accounts = service_account_count(tokens)
    async with KubeClient(config) as kube:
        await kube.create(NAMESPACES, {"metadata": {"name": NAMESPACE}})
        pods: list[BoundPod] = []
        for index in range(accounts):
            name = service_account_name(index)
            await kube.create(SERVICEACCOUNTS, {"metadata": {"name": name}}, NAMESPACE)
            pods.append(await create_pod(kube, name, node))
        identities = [bench_identity(index) for index in range(accounts)]
        csrs = [build_csr(generate_private_key(), identity) for identity in identities]
        limit = asyncio.Semaphore(MINT_CONCURRENCY)

        async def mint(token_index: int) -> Credential:
            account = service_account_of(token_index, accounts)
            async with limit:
                token = await kube.token_request(
                    NAMESPACE, service_account_name(account), ["identity.l5d.io"], 3600,
                    bound_pod=pods[account],
                )  # fmt: skip
            return Credential(identities[account], token.encode(), csrs[account])

        minted = await asyncio.gather(*(mint(i) for i in range(tokens)))
    if len({credential.token for credential in minted}) != tokens:
        raise RuntimeError("the apiserver minted identical tokens (ServiceAccountTokenJTI off?)")
    return minted


async def create_pod(kube: KubeClient, service_account: str, node: str) -> BoundPod:
    for _ in range(100):  # the ServiceAccount admission cache may lag a moment
        try:
            pod = await kube.create(
                PODS,
                {
                    "metadata": {"name": f"{service_account}-0"},
                    "spec": {
                        "serviceAccountName": service_account,
                        "nodeName": node,
                        "containers": [{"name": "app", "image": "example.invalid/app:1"}],
                    },
                },
                NAMESPACE,
            )
            return BoundPod.of(pod)
        except Exception:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"could not create the bench pod for {service_account}")


async def drive(
    address: str,
    credentials: list[Credential],
    *,
    requests: int,
    concurrency: int,
    seconds: float,
    on_start: Callable[[], None],
) -> dict[str, Any]:
    done = failed = started_count = 0
    sequence = itertools.count()
    repeats = TokenRepeats()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = identity_pb2_grpc.IdentityStub(channel)

        async def certify() -> bool:
            token_index = token_for_request(next(sequence), len(credentials))
            credential = credentials[token_index]
            repeats.present(token_index, time.monotonic())
            request = identity_pb2.CertifyRequest(
                identity=credential.identity,
                token=credential.token,
                certificate_signing_request=credential.csr,
            )
            try:
                await stub.Certify(request, timeout=30)
                return True
            except grpc.aio.AioRpcError:
                return False
            finally:
                repeats.completed(token_index, time.monotonic())

        async def worker() -> None:
            nonlocal done, failed, started_count
            deadline = time.monotonic() + seconds
            while started_count < requests and time.monotonic() < deadline:
                started_count += 1  # claimed before the await, so the total never overshoots
                if await certify():
                    done += 1
                else:
                    failed += 1

        # Warm-up outside the timing, at full concurrency so that the identity service's
        # keep-alive pool to the apiserver already holds as many connections as the run needs.
        warmed = await asyncio.gather(*(certify() for _ in range(warm_up_count(concurrency))))
        if not all(warmed):
            raise RuntimeError(f"{warmed.count(False)} warm-up Certify requests failed")
        repeats.reset_counts()
        on_start()
        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return {"issued": done, "failed": failed, "seconds": round(elapsed, 3),
            "certs_per_second": round(done / elapsed, 1) if elapsed else 0.0,
            "token_repeats_within_cache_ttl": round(repeats.repeat_fraction, 4)}  # fmt: skip


def warm_up_count(concurrency: int) -> int:
    return 2 * concurrency


def default_token_count(requests: int, concurrency: int) -> int:
    """One distinct token per request, the warm-up's included: none repeats."""
    return requests + warm_up_count(concurrency)


def measure(
    cluster: KubeTestCluster,
    root: Path,
    *,
    requests: int = 3000,
    concurrency: int = 32,
    seconds: float = 30.0,
    tokens: int | None = None,
    profile: Path | None = None,
    native: bool = False,
) -> dict[str, Any]:
    """Run the identity service against ``cluster`` and drive Certify; the result summary.

    ``root`` is a scratch directory for the issuer files and the service's log. ``tokens`` is
    how many distinct tokens the requests rotate through (default: one per request).
    """
    if tokens is None:
        tokens = default_token_count(requests, concurrency)
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
        minting = time.monotonic()
        credentials = asyncio.run(mint_credentials(cluster.config, cluster.node_name, tokens))
        mint_seconds = time.monotonic() - minting
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
                    f"127.0.0.1:{grpc_port}", credentials, requests=requests,
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
        "tokens": tokens,
        "service_accounts": service_account_count(tokens),
        "mint_seconds": round(mint_seconds, 1),
        **result,
        "identity_cpu_ms_per_cert": cpu["identity"],
        "cpu_ms_per_cert": cpu,
    }


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.identity_bench")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--tokens", type=positive_int, default=None,
        help="distinct tokens to rotate through (default: one per request; 1: the same token "
        "for every request, so the apiserver's 10 s token cache answers most reviews)",
    )  # fmt: skip
    parser.add_argument("--profile", type=Path, default=None, help="py-spy output file")
    parser.add_argument("--native", action="store_true", help="profile native frames too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="identity-bench-") as tmp, KubeTestCluster() as cluster:
        summary = measure(
            cluster, Path(tmp), requests=args.requests, concurrency=args.concurrency,
            seconds=args.seconds, tokens=args.tokens, profile=args.profile, native=args.native,
        )  # fmt: skip
    print(json.dumps(summary))
    return 0 if summary["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
