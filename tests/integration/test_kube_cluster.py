"""The real test cluster does what Gossamer's components rely on: controllers, kwok, tokens,
admission webhooks, and a clean start/stop."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from gossamer_kube.client import BoundPod, KubeClient
from gossamer_kube.errors import KubeApiError
from gossamer_kube.resources import (
    DEPLOYMENTS,
    ENDPOINTSLICES,
    MUTATINGWEBHOOKCONFIGURATIONS,
    PODS,
    SERVICEACCOUNTS,
    SERVICES,
)
from gossamer_kube.testing import KubeTestCluster
from gossamer_kube.testing.binaries import locate_kubectl
from gossamer_kube.testing.pki import issue_cert, make_ca
from gossamer_kube.testing.pytest_plugin import locate_binaries_or_skip

AUDIENCE = "identity.l5d.io"


async def _until(what: str, check: Any, limit: float = 60.0) -> Any:
    """Poll an async ``check`` until it returns something truthy (bounded by ``limit`` s)."""
    deadline = time.monotonic() + limit
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def _pod(
    name: str, node: str, sa: str = "default", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "nodeName": node,
            "serviceAccountName": sa,
            "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
        },
    }


async def test_deployment_pods_run_and_endpointslice_lists_them(
    kube_cluster: KubeTestCluster, kube_client: KubeClient, kube_namespace: str
) -> None:
    labels = {"app": "web"}
    await kube_client.create(
        SERVICES,
        {
            "metadata": {"name": "web"},
            "spec": {
                "selector": labels,
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        },
        kube_namespace,
    )
    await kube_client.create(
        DEPLOYMENTS,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "web",
                                "image": "registry.invalid/web:1",
                                "ports": [{"containerPort": 8080}],
                            }
                        ]
                    },
                },
            },
        },
        kube_namespace,
    )

    async def running_pods() -> list[dict[str, Any]] | None:
        pods, _ = await kube_client.list(PODS, kube_namespace, label_selector="app=web")
        ok = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
        return ok if len(ok) == 3 and all(p["status"].get("podIP") for p in ok) else None

    pods = await _until("3 running pods", running_pods)
    pod_cidr = ipaddress.ip_network(kube_cluster.options.pod_cidr)
    ips = sorted(p["status"]["podIP"] for p in pods)
    assert len(set(ips)) == 3
    assert all(ipaddress.ip_address(ip) in pod_cidr for ip in ips)
    assert {p["spec"]["nodeName"] for p in pods} == {kube_cluster.node_name}
    for pod in pods:
        ready = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True"

    async def slice_ips() -> list[str] | None:
        slices, _ = await kube_client.list(
            ENDPOINTSLICES, kube_namespace, label_selector="kubernetes.io/service-name=web"
        )
        found = sorted(
            addr
            for s in slices
            for ep in s.get("endpoints") or []
            if ep.get("conditions", {}).get("ready")
            for addr in ep["addresses"]
        )
        return found if found == ips else None

    assert await _until("EndpointSlice with the pod IPs", slice_ips) == ips
    slices, _ = await kube_client.list(
        ENDPOINTSLICES, kube_namespace, label_selector="kubernetes.io/service-name=web"
    )
    assert slices[0]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    targets = {ep["targetRef"]["name"] for s in slices for ep in s["endpoints"]}
    assert targets == {p["metadata"]["name"] for p in pods}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _forge(token: str) -> str:
    """The same header and claims, signed by a key the apiserver has never seen."""
    header, payload, _ = token.split(".")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signing_input = f"{header}.{payload}".encode()
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64url(signature)}"


async def test_bound_token_request_and_review(
    kube_cluster: KubeTestCluster, kube_client: KubeClient, kube_namespace: str
) -> None:
    await kube_client.create(SERVICEACCOUNTS, {"metadata": {"name": "web"}}, kube_namespace)
    pod = await kube_client.create(
        PODS, _pod("web-0", kube_cluster.node_name, sa="web"), kube_namespace
    )
    token = await kube_client.token_request(
        kube_namespace, "web", [AUDIENCE], expiration_seconds=3600, bound_pod=BoundPod.of(pod)
    )
    claims = json.loads(_unb64url(token.split(".")[1]))
    assert claims["aud"] == [AUDIENCE]
    assert claims["iss"] == "https://kubernetes.default.svc.cluster.local"
    assert claims["kubernetes.io"]["pod"]["name"] == "web-0"

    review = await kube_client.token_review(token, [AUDIENCE])
    assert review.authenticated, review.error
    assert review.username == f"system:serviceaccount:{kube_namespace}:web"
    assert review.audiences == (AUDIENCE,)
    assert review.extra["authentication.kubernetes.io/pod-name"] == ("web-0",)
    assert review.extra["authentication.kubernetes.io/pod-uid"] == (pod["metadata"]["uid"],)

    wrong_audience = await kube_client.token_review(token, ["some-other-audience"])
    assert not wrong_audience.authenticated
    assert wrong_audience.error

    forged = await kube_client.token_review(_forge(token), [AUDIENCE])
    assert not forged.authenticated
    assert forged.error

    # A pod-bound token dies with its pod (the apiserver looks the pod up by uid; successful
    # reviews are cached for about 10 s, hence the wait).
    await kube_client.delete(PODS, "web-0", kube_namespace, grace_period_seconds=0)

    async def rejected() -> bool:
        return not (await kube_client.token_review(token, [AUDIENCE])).authenticated

    assert await _until("token of deleted pod rejected", rejected)


def _webhook_tls(tmp_path: Path) -> tuple[ssl.SSLContext, bytes]:
    ca = make_ca("webhook-test-ca")
    leaf = issue_cert(ca, "webhook", ip_addresses=("127.0.0.1",), server=True)
    (tmp_path / "tls.crt").write_bytes(leaf.cert_pem)
    (tmp_path / "tls.key").write_bytes(leaf.key_pem)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    return ctx, ca.cert_pem


@contextlib.asynccontextmanager
async def _serve(app: web.Application, ctx: ssl.SSLContext) -> AsyncIterator[int]:
    """Serve ``app`` over TLS on a free loopback port; yield the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.SockSite(runner, sock, ssl_context=ctx).start()
        yield sock.getsockname()[1]
    finally:
        await runner.cleanup()
        sock.close()


async def test_mutating_webhook_is_called_and_its_patch_applied(
    kube_cluster: KubeTestCluster,
    kube_client: KubeClient,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    reviews: list[dict[str, Any]] = []

    async def mutate(request: web.Request) -> web.Response:
        review = await request.json()
        reviews.append(review)
        patch = [{"op": "add", "path": "/metadata/labels/gossamer.test~1mutated", "value": "yes"}]
        return web.json_response(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": review["request"]["uid"],
                    "allowed": True,
                    "patchType": "JSONPatch",
                    "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
                },
            }
        )

    app = web.Application()
    app.router.add_post("/mutate", mutate)
    ctx, ca_pem = _webhook_tls(tmp_path)
    name = f"gossamer-test-{kube_namespace}"
    async with _serve(app, ctx) as port:
        try:
            await kube_client.create(
                MUTATINGWEBHOOKCONFIGURATIONS,
                {
                    "metadata": {"name": name},
                    "webhooks": [
                        {
                            "name": "mutate.gossamer.test",
                            "clientConfig": {
                                "url": f"https://127.0.0.1:{port}/mutate",
                                "caBundle": base64.b64encode(ca_pem).decode(),
                            },
                            "rules": [
                                {
                                    "operations": ["CREATE"],
                                    "apiGroups": [""],
                                    "apiVersions": ["v1"],
                                    "resources": ["pods"],
                                }
                            ],
                            # Only this test's namespace: other tests' pods are left alone.
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": kube_namespace}
                            },
                            "failurePolicy": "Fail",
                            "sideEffects": "None",
                            "admissionReviewVersions": ["v1"],
                            "timeoutSeconds": 5,
                        }
                    ],
                },
            )
            # The apiserver picks new webhook configurations up asynchronously: retry (bounded)
            # until a pod is created after it took effect.
            mutated: dict[str, Any] | None = None
            for attempt in range(50):
                pod = await kube_client.create(
                    PODS,
                    _pod(f"p{attempt}", kube_cluster.node_name, labels={"app": "hooked"}),
                    kube_namespace,
                )
                if pod["metadata"].get("labels", {}).get("gossamer.test/mutated") == "yes":
                    mutated = pod
                    break
                await asyncio.sleep(0.2)
            assert mutated is not None, "the webhook never mutated a pod"
            stored = await kube_client.get(PODS, mutated["metadata"]["name"], kube_namespace)
            assert stored["metadata"]["labels"]["gossamer.test/mutated"] == "yes"
            request = reviews[-1]["request"]
            assert request["kind"] == {"group": "", "version": "v1", "kind": "Pod"}
            assert request["operation"] == "CREATE"
            assert request["namespace"] == kube_namespace
            assert request["object"]["metadata"]["name"] == mutated["metadata"]["name"]
        finally:
            try:
                await kube_client.delete(MUTATINGWEBHOOKCONFIGURATIONS, name)
            except KubeApiError as exc:
                if not exc.not_found:
                    raise


def _listening_ports() -> set[int]:
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _pids_in_groups(pgids: set[int]) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) in pgids and fields[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.kube
def test_five_start_stop_cycles_leave_nothing_behind() -> None:
    binaries = locate_binaries_or_skip()
    for _ in range(5):
        cluster = KubeTestCluster(binaries=binaries)
        cluster.start()
        try:
            pgids = {p.record.pid for p in cluster.processes}
            ports = {int(u.rsplit(":", 1)[1]) for u in (cluster.server, cluster.etcd_url)}
            files = [cluster.state_dir, cluster.etcd_data_dir]
            assert len(pgids) == 5
            assert ports <= _listening_ports()
            assert all(f is not None and f.exists() for f in files)
        finally:
            cluster.stop()
        assert _pids_in_groups(pgids) == []
        assert not ports & _listening_ports()
        assert not any(f is not None and f.exists() for f in files)


@pytest.mark.kube
def test_start_failure_reports_the_component_log(tmp_path: Path) -> None:
    binaries = locate_binaries_or_skip()
    # A fake kube-apiserver that dies at once: start-up must fail fast with its log.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
        (fake_bin / name).symlink_to(binaries.path(name))
    script = fake_bin / "kube-apiserver"
    script.write_text("#!/bin/sh\necho 'apiserver: simulated bad flag' >&2\nexit 3\n")
    script.chmod(0o755)
    cluster = KubeTestCluster(binaries=type(binaries)(fake_bin, binaries.etcd))
    with pytest.raises(Exception, match="simulated bad flag") as info:
        cluster.start()
    assert "kube-apiserver: exited with status 3" in str(info.value)
    assert not cluster.state_dir.exists()
    assert cluster.processes == []


@pytest.mark.slow
@pytest.mark.kube
def test_local_mode_up_status_down(tmp_path: Path) -> None:
    """`make kube-up` / `make kube-down`: a detached cluster that a later process stops."""
    locate_binaries_or_skip()
    kubectl = str(locate_kubectl())
    state = tmp_path / "kube-local"
    env = {**os.environ, "GOSSAMER_KUBE_STATE": str(state)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gossamer_kube.testing", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    up = run("up")
    try:
        assert up.returncode == 0, up.stderr
        assert f"export KUBECONFIG={state / 'kubeconfig'}" in up.stdout
        recorded = KubeTestCluster.read_state(state)
        assert recorded is not None
        pgids = {p["pid"] for p in recorded["processes"]}
        assert len(pgids) == 5
        status = run("status")
        assert status.returncode == 0, status.stdout
        assert "readyz: ok" in status.stdout
        again = run("up")
        assert "already running" in again.stdout
        nodes = subprocess.run(
            [kubectl, "--kubeconfig", str(state / "kubeconfig"), "get", "nodes", "-o", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert nodes.stdout.strip() == "node/gossamer-node"
    finally:
        down = run("down")
    assert down.returncode == 0
    assert "stopped: kwok, kube-scheduler, kube-controller-manager, kube-apiserver, etcd" in (
        down.stdout
    )
    assert _pids_in_groups(pgids) == []
    assert not state.exists()
    assert run("status").returncode == 1
