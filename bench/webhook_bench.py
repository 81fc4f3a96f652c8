"""The injector's latency for 1,000 pod creations through a real kube-apiserver.

``python -m bench.webhook_bench`` starts the test cluster (etcd, kube-apiserver,
controller-manager, scheduler, kwok), runs ``python -m gossamer_injector`` on loopback,
registers it with a URL clientConfig, then creates N pods (default 1,000) in an annotated
namespace with bounded concurrency. Two views are reported:

- webhook: the time the injector spent per review (from its own JSON log lines), and
- create: the client-observed pod POST, which includes the apiserver's call to the webhook.

``--direct`` skips the cluster and posts the same AdmissionReviews straight to the webhook
over HTTPS, for machines without the Kubernetes binaries. Results: bench/results/webhook.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from gossamer_inject import WebhookTarget, render_webhook_config
from gossamer_kube.client import KubeClient
from gossamer_kube.config import KubeConfig
from gossamer_kube.resources import MUTATINGWEBHOOKCONFIGURATIONS, NAMESPACES, PODS
from gossamer_kube.testing import KubeTestCluster
from gossamer_kube.testing.binaries import KubeBinaries
from gossamer_kube.testing.cluster import free_port
from gossamer_kube.testing.pki import IssuedCert, issue_cert, make_ca

RESULTS = Path(__file__).parent / "results"
NAMESPACE = "webhook-bench"
DEADLINE_SECONDS = 900.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 50), 3),
        "p90_ms": round(percentile(values, 90), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "max_ms": round(max(values), 3),
        "mean_ms": round(statistics.fmean(values), 3),
    }


def pod(i: int, node: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "app",
                "image": "registry.invalid/app:1",
                "ports": [{"containerPort": 8080, "name": "http"}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
            }
        ]
    }
    if node is not None:
        spec["nodeName"] = node
    return {"metadata": {"name": f"bench-{i}", "labels": {"app": "bench"}}, "spec": spec}


def start_injector(
    workdir: Path, kubeconfig: Path | None
) -> tuple[subprocess.Popen[bytes], int, IssuedCert, Path]:
    ca = make_ca("bench-injector-ca")
    leaf = issue_cert(ca, "injector", ip_addresses=("127.0.0.1",), server=True)
    (workdir / "tls.crt").write_bytes(leaf.cert_pem)
    (workdir / "tls.key").write_bytes(leaf.key_pem)
    (workdir / "anchors.pem").write_bytes(make_ca("bench-anchors").cert_pem)
    port, admin = free_port(), free_port()
    log = workdir / "injector.log"
    env = dict(os.environ)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    else:
        # --direct: no cluster; the namespace lookups fail fast against a closed port.
        stub = workdir / "kubeconfig"
        stub.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
            f"clusters: [{{name: x, cluster: {{server: 'http://127.0.0.1:{free_port()}'}}}}]\n"
            "contexts: [{name: x, context: {cluster: x, user: x}}]\nusers: [{name: x, user: {}}]\n"
        )
        env["KUBECONFIG"] = str(stub)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "gossamer_injector",
                f"--listen=127.0.0.1:{port}", f"--admin-listen=127.0.0.1:{admin}",
                f"--tls-cert-file={workdir / 'tls.crt'}", f"--tls-key-file={workdir / 'tls.key'}",
                f"--trust-anchors-file={workdir / 'anchors.pem'}",
            ],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"injector exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("injector did not become ready")
        time.sleep(0.1)
    return proc, port, ca, log


def webhook_times(log: Path) -> list[float]:
    times = []
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "review" and event.get("kind") == "Pod":
            times.append(float(event["ms"]))
    return times


async def bounded(n: int, concurrency: int, one: Callable[[int], Awaitable[float]]) -> list[float]:
    sem = asyncio.Semaphore(concurrency)
    results: list[float] = []

    async def run(i: int) -> None:
        async with sem:
            results.append(await one(i))

    await asyncio.wait_for(asyncio.gather(*(run(i) for i in range(n))), DEADLINE_SECONDS)
    return results


async def through_apiserver(
    cluster: KubeTestCluster, port: int, ca: IssuedCert, n: int, concurrency: int
) -> tuple[list[float], int]:
    async with KubeClient(KubeConfig.from_kubeconfig(cluster.kubeconfig)) as client:
        await client.create(
            NAMESPACES,
            {"metadata": {"name": NAMESPACE, "annotations": {"linkerd.io/inject": "enabled"}}},
        )
        config = render_webhook_config(
            ca_bundle_pem=ca.cert_pem, target=WebhookTarget(url=f"https://127.0.0.1:{port}/")
        )
        await client.create(MUTATINGWEBHOOKCONFIGURATIONS, config)
        # Wait (bounded) until the apiserver uses the new configuration.
        for attempt in range(100):
            probe = await client.create(PODS, pod(-attempt - 1, cluster.node_name), NAMESPACE)
            if probe["spec"].get("initContainers"):
                break
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError("webhook configuration never took effect")
        injected = 0

        async def one(i: int) -> float:
            nonlocal injected
            started = time.perf_counter()
            created = await client.create(PODS, pod(i, cluster.node_name), NAMESPACE)
            elapsed = (time.perf_counter() - started) * 1000
            if any(c["name"] == "linkerd-proxy" for c in created["spec"].get("initContainers", [])):
                injected += 1
            return elapsed

        times = await bounded(n, concurrency, one)
        await client.delete(NAMESPACES, NAMESPACE)
        await client.delete(MUTATINGWEBHOOKCONFIGURATIONS, config["metadata"]["name"])
        return times, injected


async def direct(port: int, ca: IssuedCert, n: int, concurrency: int) -> tuple[list[float], int]:
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    injected = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:

        async def one(i: int) -> float:
            nonlocal injected
            obj = pod(i, None)
            obj["metadata"]["annotations"] = {"linkerd.io/inject": "enabled"}
            review = {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": f"u{i}", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "operation": "CREATE", "namespace": NAMESPACE, "object": obj,
                },
            }  # fmt: skip
            started = time.perf_counter()
            async with session.post(f"https://127.0.0.1:{port}/", json=review) as resp:
                body = await resp.json()
            elapsed = (time.perf_counter() - started) * 1000
            if "patch" in body["response"]:
                injected += 1
            return elapsed

        times = await bounded(n, concurrency, one)
    return times, injected


def measure(
    cluster: KubeTestCluster | None, workdir: Path, *, pods: int = 1000, concurrency: int = 8
) -> dict[str, Any]:
    """Run the injector and create ``pods`` pods through ``cluster`` (or, with None, post the
    reviews straight to the webhook); the result summary."""
    proc = None
    try:
        proc, port, ca, log = start_injector(
            workdir, None if cluster is None else cluster.kubeconfig
        )
        if cluster is None:
            client_times, injected = asyncio.run(direct(port, ca, pods, concurrency))
        else:
            client_times, injected = asyncio.run(
                through_apiserver(cluster, port, ca, pods, concurrency)
            )
        server_times = webhook_times(log)[-pods:]
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {
        "mode": "direct" if cluster is None else "apiserver",
        "pods": pods,
        "concurrency": concurrency,
        "injected": injected,
        "webhook": summary(server_times),
        "client": summary(client_times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--direct", action="store_true", help="skip the apiserver")
    args = parser.parse_args()
    if not 0 < args.pods <= 10000:
        parser.error("--pods must be between 1 and 10000")
    with tempfile.TemporaryDirectory(prefix="webhook-bench-") as tmp:
        cluster = None if args.direct else KubeTestCluster(binaries=KubeBinaries.locate())
        if cluster is not None:
            cluster.start()
        try:
            result = measure(cluster, Path(tmp), pods=args.pods, concurrency=args.concurrency)
        finally:
            if cluster is not None:
                cluster.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "webhook.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
