"""The proxy's grpclib control-plane clients against the real grpcio services and kube-apiserver.

Interop proof for moving the sidecar off grpcio: the identity service (a real process doing
TokenReview) certifies the proxy's :class:`IdentityClient`, and the destination service (a real
process watching the cluster) feeds the proxy's :class:`DestinationClient`,
:class:`InboundPolicyClient` and :class:`OutboundPolicyClient`: endpoints, profiles, policies,
and a rejected target that ends its watch with the grpclib status the proxy matches on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from gossamer_common.metrics import Registry
from gossamer_destination.testing_cluster import DestinationProcess, apply_crds
from gossamer_kube.client import BoundPod, KubeClient
from gossamer_kube.resources import DEPLOYMENTS, PODS, SERVICEACCOUNTS, SERVICES
from gossamer_kube.testing import KubeTestCluster
from gossamer_proxy.mesh.authz import default_policy
from gossamer_proxy.mesh.backoff import Backoff
from gossamer_proxy.mesh.channels import control_channel
from gossamer_proxy.mesh.control_stream import StreamConfig
from gossamer_proxy.mesh.discovery import DestinationClient
from gossamer_proxy.mesh.identity import IdentityClient, IdentityConfig, IdentityMetrics
from gossamer_proxy.mesh.policy_watch import InboundPolicyClient, OutboundPolicyClient
from gossamer_tls import certificates_to_pem, generate_trust_anchor_and_issuer, private_key_to_pem

pytestmark = pytest.mark.kube

CONTROL_NS = "gossamer"
TRUST_DOMAIN = "cluster.local"
AUDIENCE = "identity.l5d.io"
WAIT = 60.0
STREAMS = StreamConfig(initial_timeout=10.0, backoff=Backoff(0.1, 1.0, 0.5))
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(what: str, probe: Callable[[], T | None], limit: float = WAIT) -> T:
    """Poll ``probe`` (bounded in time) until it returns a value."""
    deadline = time.monotonic() + limit
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def until_async(what: str, probe: Callable[[], Awaitable[T | None]]) -> T:
    deadline = time.monotonic() + WAIT
    while True:
        value = await probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


# --- identity ------------------------------------------------------------------------------------


class IdentityService:
    """``python -m gossamer_identity`` on loopback with a fresh trust anchor and issuer."""

    def __init__(self, kubeconfig: Path, root: Path) -> None:
        self.trust = generate_trust_anchor_and_issuer(
            trust_domain=TRUST_DOMAIN,
            control_plane_namespace=CONTROL_NS,
            now=dt.datetime.now(dt.UTC),
        )
        self.anchors_pem = certificates_to_pem([self.trust.trust_anchor.certificate]).decode()
        anchors = root / "ca-bundle.crt"
        anchors.write_text(self.anchors_pem)
        issuer = root / "issuer"
        issuer.mkdir()
        (issuer / "crt.pem").write_bytes(certificates_to_pem([self.trust.issuer.certificate]))
        (issuer / "key.pem").write_bytes(private_key_to_pem(self.trust.issuer.private_key))
        self.grpc_addr = f"127.0.0.1:{free_port()}"
        admin_port = free_port()
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        self.log = root / "identity.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "gossamer_identity",
                    f"--kubeconfig={kubeconfig}",
                    f"--addr={self.grpc_addr}",
                    f"--admin-addr=127.0.0.1:{admin_port}",
                    f"--issuer={issuer}",
                    f"--trust-anchors-path={anchors}",
                    f"--controller-namespace={CONTROL_NS}",
                    f"--identity-trust-domain={TRUST_DOMAIN}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"identity exited {self.process.returncode}:\n{self.log.read_text()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.admin_url + "/ready", timeout=5) as resp,
            ):
                if resp.status == 200:
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"identity never became ready:\n{self.log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def identity_service(kube_cluster: KubeTestCluster, tmp_path: Path) -> Iterator[IdentityService]:
    service = IdentityService(kube_cluster.kubeconfig, tmp_path)
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


async def test_proxy_identity_client_certifies_against_the_real_identity_service(
    identity_service: IdentityService,
    kube_client: KubeClient,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    await kube_client.create(SERVICEACCOUNTS, {"metadata": {"name": "web"}}, ns)  # a fresh ns
    pod = await kube_client.create(
        PODS,
        {
            "metadata": {"name": "web-0"},
            "spec": {
                "serviceAccountName": "web",
                "nodeName": "kwok-node-0",
                "containers": [{"name": "app", "image": "example.invalid/app:1"}],
            },
        },
        ns,
    )
    token = await kube_client.token_request(ns, "web", [AUDIENCE], 600, bound_pod=BoundPod.of(pod))
    token_file = tmp_path / "token"
    token_file.write_text(token)
    name = f"web.{ns}.serviceaccount.identity.{CONTROL_NS}.{TRUST_DOMAIN}"
    client = IdentityClient(
        IdentityConfig(name, identity_service.anchors_pem, token_file, identity_service.grpc_addr),
        metrics=IdentityMetrics(Registry()),
    )
    await client.refresh()
    assert client.credentials is not None, client.last_error
    assert client.credentials.identity == name
    assert client.ready.is_set()

    # A token for another service account is refused by the real TokenReview: the status
    # comes back through grpclib as the error the client records, and nothing is installed.
    wrong = IdentityClient(
        IdentityConfig(
            f"db.{ns}.serviceaccount.identity.{CONTROL_NS}.{TRUST_DOMAIN}",
            identity_service.anchors_pem,
            token_file,
            identity_service.grpc_addr,
        )
    )
    await wrong.refresh()
    assert wrong.credentials is None
    assert wrong.last_error is not None
    # The service's identity-mismatch refusal, with its status name, read through grpclib.
    assert wrong.last_error.startswith("FAILED_PRECONDITION: "), wrong.last_error


# --- destination and policy ----------------------------------------------------------------------


@pytest.fixture
def destination(kube_cluster: KubeTestCluster, tmp_path: Path) -> Iterator[DestinationProcess]:
    apply_crds(kube_cluster.admin())
    proc = DestinationProcess(kube_cluster.kubeconfig, tmp_path / "destination.log")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def deployment(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, "linkerd.io/control-plane-ns": CONTROL_NS}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "registry.invalid/web:1",
                            "ports": [{"name": "http", "containerPort": 8080}],
                        }
                    ],
                },
            },
        },
    }


async def test_proxy_discovery_and_policy_clients_against_the_real_destination_service(
    destination: DestinationProcess, kube_client: KubeClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    labels = {"app": "web"}
    svc = await kube_client.create(
        SERVICES,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]},
        },
        ns,
    )
    await kube_client.create(DEPLOYMENTS, deployment("web", labels), ns)

    async def running_pod() -> tuple[str, str] | None:
        pods, _ = await kube_client.list(PODS, ns, label_selector="app=web")
        for p in pods:
            if p.get("status", {}).get("phase") == "Running" and p["status"].get("podIP"):
                return p["metadata"]["name"], p["status"]["podIP"]
        return None

    pod_name, pod_ip = await until_async("a running pod", running_pod)
    channel = control_channel(destination.target, server_name=None, trust_anchors_pem=None)
    workload = f'{{"ns":"{ns}","pod":"{pod_name}"}}'
    discovery = DestinationClient(
        channel, context_token=f'{{"ns":"{ns}","pod":"client"}}', stream_config=STREAMS
    )
    inbound = InboundPolicyClient(
        channel,
        workload=workload,
        default=lambda port: default_policy("deny"),
        pinned_ports=[8080],
        stream_config=STREAMS,
    )
    outbound = OutboundPolicyClient(channel, workload=workload, stream_config=STREAMS)
    fqn = f"web.{ns}.svc.cluster.local"
    try:
        endpoints = discovery.acquire_endpoints(f"{fqn}:80")
        await until(
            "the pod endpoint",
            lambda: (
                True if (ipaddress.ip_address(pod_ip), 8080) in endpoints.value.endpoints else None
            ),
        )
        profile = discovery.acquire_profile(f"{fqn}:80")
        await until("the profile", lambda: profile.value)
        assert profile.value is not None
        assert profile.value.fully_qualified_name == fqn

        # Get does not take IPs: INVALID_ARGUMENT ends that watch for good (REJECTED).
        rejected = discovery.acquire_endpoints(f"{pod_ip}:8080")
        final = await until("the rejection", lambda: rejected.final)
        assert final.startswith("INVALID_ARGUMENT"), final

        inbound.start()
        state = inbound.state(8080)
        await until(
            "the controller's Server",
            lambda: True if state.value.meta.name != "deny" else None,
        )

        cluster_ip = svc["spec"]["clusterIP"]
        watched = outbound.watch(cluster_ip, 80)
        await until(
            "an outbound policy answer",
            lambda: True if watched.value is not None or watched.final is not None else None,
        )
    finally:
        await discovery.close()
        await inbound.close()
        await outbound.close()
        channel.close()
