"""The injector as a real process behind a real kube-apiserver (URL clientConfig + caBundle).

Covers the acceptance of issue 7: pods of a Deployment in an annotated namespace get
proxy-init and the proxy exactly as the patch builder specifies; ``disabled`` opts out;
``config.linkerd.io/*`` overrides take effect; Services get opaque ports; and with the
webhook down (failurePolicy Ignore) pods are still admitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import pytest_asyncio
from gossamer_inject import (
    MeshValues,
    Origin,
    Owner,
    WebhookTarget,
    build_pod_patch,
    jsonpatch,
    render_webhook_config,
)
from gossamer_kube.client import KubeClient
from gossamer_kube.errors import KubeApiError
from gossamer_kube.resources import (
    DEPLOYMENTS,
    MUTATINGWEBHOOKCONFIGURATIONS,
    NAMESPACES,
    PODS,
    SERVICES,
)
from gossamer_kube.testing import KubeTestCluster
from gossamer_kube.testing.cluster import free_port
from gossamer_kube.testing.pki import IssuedCert, issue_cert, make_ca

T = TypeVar("T")
ANCHORS_CA = make_ca("root.linkerd.cluster.local")


@dataclass
class RunningInjector:
    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    ca: IssuedCert
    anchors_pem: str
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


async def until(what: str, check: Callable[[], Awaitable[T | None]], limit: float = 60) -> T:
    deadline = time.monotonic() + limit
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def start_injector(kube_cluster: KubeTestCluster, tmp_path: Path) -> RunningInjector:
    """``python -m gossamer_injector`` on loopback with a fresh serving certificate."""
    ca = make_ca("injector-webhook-ca")
    leaf = issue_cert(ca, "gossamer-proxy-injector", ip_addresses=("127.0.0.1",), server=True)
    (tmp_path / "tls.crt").write_bytes(leaf.cert_pem)
    (tmp_path / "tls.key").write_bytes(leaf.key_pem)
    (tmp_path / "anchors.pem").write_bytes(ANCHORS_CA.cert_pem)
    port, admin_port = free_port(), free_port()
    log = tmp_path / "injector.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gossamer_injector",
                f"--listen=127.0.0.1:{port}",
                f"--admin-listen=127.0.0.1:{admin_port}",
                f"--tls-cert-file={tmp_path / 'tls.crt'}",
                f"--tls-key-file={tmp_path / 'tls.key'}",
                f"--trust-anchors-file={tmp_path / 'anchors.pem'}",
                f"--kubeconfig={kube_cluster.kubeconfig}",
                "--namespace-cache-ttl=0s",
                "--namespace-cache-stale=0s",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(kube_cluster.kubeconfig)},
        )
    return RunningInjector(process, port, admin_port, ca, ANCHORS_CA.cert_pem.decode(), log)


@pytest_asyncio.fixture
async def injector(kube_cluster: KubeTestCluster, tmp_path: Path) -> AsyncIterator[RunningInjector]:
    running = start_injector(kube_cluster, tmp_path)
    try:

        async def ready() -> bool:
            assert running.process.poll() is None, running.log.read_text()
            try:
                async with (
                    aiohttp.ClientSession() as s,
                    s.get(f"http://127.0.0.1:{running.admin_port}/ready") as r,
                ):
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await until("injector ready", ready, limit=30)
        yield running
    finally:
        running.stop()


async def register(client: KubeClient, namespace: str, port: int, ca: IssuedCert) -> str:
    """Our rendered config, narrowed to this test's namespace so other tests are unaffected."""
    config = render_webhook_config(
        ca_bundle_pem=ca.cert_pem,
        target=WebhookTarget(url=f"https://127.0.0.1:{port}/inject"),
        name=f"gossamer-injector-{namespace}",
        timeout_seconds=5,
    )
    config["webhooks"][0]["namespaceSelector"]["matchExpressions"].append(
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [namespace]}
    )
    await client.create(MUTATINGWEBHOOKCONFIGURATIONS, config)
    return str(config["metadata"]["name"])


async def wait_until_effective(client: KubeClient, namespace: str, node: str) -> None:
    """The apiserver loads webhook configurations asynchronously: probe with a pod."""
    attempt = 0

    async def probe() -> bool:
        nonlocal attempt
        attempt += 1
        pod = await client.create(PODS, app_pod(f"probe-{attempt}", node), namespace)
        return any(c["name"] == "linkerd-proxy" for c in pod["spec"].get("initContainers", []))

    await until("webhook configuration to take effect", probe, limit=30)


def app_pod(name: str, node: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"app": name},
            "annotations": {"linkerd.io/inject": "enabled", **(annotations or {})},
        },
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "app",
                    "image": "registry.invalid/app:1",
                    "ports": [{"containerPort": 8080, "name": "http"}],
                }
            ],
        },
    }


def assert_subset(expected: Any, actual: Any, path: str = "") -> None:
    """Everything we asked for is there (the apiserver may add defaults around it)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} missing"
            assert_subset(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        # The ServiceAccount admission plugin appends its token volume and mounts.
        assert isinstance(actual, list), path
        assert len(actual) >= len(expected), path
        for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
            assert_subset(e, a, f"{path}[{i}]")
    else:
        assert expected == actual, f"{path}: {expected!r} != {actual!r}"


async def cleanup_config(client: KubeClient, name: str) -> None:
    with contextlib.suppress(KubeApiError):
        await client.delete(MUTATINGWEBHOOKCONFIGURATIONS, name)


async def test_deployment_in_annotated_namespace_is_injected(
    injector: RunningInjector,
    kube_cluster: KubeTestCluster,
    kube_client: KubeClient,
    kube_namespace: str,
) -> None:
    ns = kube_namespace
    await kube_client.patch(
        NAMESPACES,
        ns,
        {"metadata": {"annotations": {"linkerd.io/inject": "enabled"}}},
    )
    name = await register(kube_client, ns, injector.port, injector.ca)
    try:
        await wait_until_effective(kube_client, ns, kube_cluster.node_name)
        template: dict[str, Any] = {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "registry.invalid/web:1",
                        "ports": [{"containerPort": 8080, "name": "http"}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8081}},
                    }
                ]
            },
        }
        await kube_client.create(
            DEPLOYMENTS,
            {
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": template,
                },
            },
            ns,
        )

        async def pods() -> list[dict[str, Any]] | None:
            items, _ = await kube_client.list(PODS, ns, label_selector="app=web")
            return items if len(items) == 2 else None

        created = await until("two web pods", pods)
        mesh = MeshValues(trust_anchors_pem=injector.anchors_pem)
        for pod in created:
            expected_patch = build_pod_patch(
                template,
                mesh=mesh,
                origin=Origin.WEBHOOK,
                created_by="gossamer/proxy-injector 0.1.0",
                namespace=ns,
                namespace_annotations={"linkerd.io/inject": "enabled"},
                owner=Owner("Deployment", "web"),
            )
            expected = jsonpatch.apply(
                {"metadata": {"labels": {"app": "web"}}, "spec": dict(template["spec"])},
                expected_patch.ops,
            )
            spec = pod["spec"]
            assert [c["name"] for c in spec["initContainers"]] == ["linkerd-init", "linkerd-proxy"]
            assert [c["name"] for c in spec["containers"]] == ["web"]
            assert_subset(expected["spec"]["initContainers"], spec["initContainers"], "init")
            # The ServiceAccount plugin adds its token volume before the webhook runs.
            volumes = {v["name"]: v for v in spec["volumes"]}
            for volume in expected["spec"]["volumes"]:
                assert_subset(volume, volumes[volume["name"]], f"volumes.{volume['name']}")
            init, proxy = spec["initContainers"]
            assert init["image"] == "gossamer/proxy-init:0.1.0"
            assert "--inbound-ports-to-ignore" in init["args"]
            assert proxy["image"] == "gossamer/proxy:0.1.0"
            assert proxy["restartPolicy"] == "Always"
            env = {e["name"]: e.get("value") for e in proxy["env"]}
            assert env["LINKERD2_PROXY_INBOUND_PORTS"] == "8080,8081"
            assert env["LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"] == injector.anchors_pem
            labels = pod["metadata"]["labels"]
            # The ReplicaSet was looked up to find the Deployment.
            assert labels["linkerd.io/proxy-deployment"] == "web"
            assert labels["linkerd.io/workload-ns"] == ns
            assert labels["linkerd.io/control-plane-ns"] == "gossamer"
            ann = pod["metadata"]["annotations"]
            assert ann["linkerd.io/created-by"] == "gossamer/proxy-injector 0.1.0"
            assert ann["linkerd.io/inject"] == "enabled"  # inherited from the namespace
            assert ann["linkerd.io/proxy-version"] == "0.1.0"

        # A Service in the namespace gets the opaque-ports annotation for its database port.
        svc = await kube_client.create(
            SERVICES,
            {
                "metadata": {"name": "db"},
                "spec": {"ports": [{"name": "pg", "port": 5432}, {"name": "web", "port": 80}]},
            },
            ns,
        )
        assert svc["metadata"]["annotations"]["config.linkerd.io/opaque-ports"] == "5432"
    finally:
        await cleanup_config(kube_client, name)


async def test_disabled_overrides_and_declines(
    injector: RunningInjector,
    kube_cluster: KubeTestCluster,
    kube_client: KubeClient,
    kube_namespace: str,
) -> None:
    ns, node = kube_namespace, kube_cluster.node_name
    await kube_client.patch(
        NAMESPACES, ns, {"metadata": {"annotations": {"linkerd.io/inject": "enabled"}}}
    )
    name = await register(kube_client, ns, injector.port, injector.ca)
    try:
        await wait_until_effective(kube_client, ns, node)
        off = await kube_client.create(
            PODS, app_pod("off", node, {"linkerd.io/inject": "disabled"}), ns
        )
        assert "initContainers" not in off["spec"]
        assert [c["name"] for c in off["spec"]["containers"]] == ["app"]

        tuned = await kube_client.create(
            PODS,
            app_pod(
                "tuned",
                node,
                {
                    "config.linkerd.io/proxy-cpu-limit": "1500m",
                    "config.linkerd.io/proxy-memory-request": "32Mi",
                    "config.linkerd.io/proxy-log-level": "debug",
                    "config.linkerd.io/skip-outbound-ports": "3306",
                    "config.linkerd.io/proxy-enable-native-sidecar": "false",
                },
            ),
            ns,
        )
        proxy = tuned["spec"]["containers"][0]
        assert proxy["name"] == "linkerd-proxy"
        assert proxy["resources"]["limits"]["cpu"] == "1500m"
        assert proxy["resources"]["requests"]["memory"] == "32Mi"
        env = {e["name"]: e.get("value") for e in proxy["env"]}
        assert env["LINKERD2_PROXY_LOG"] == "debug"
        assert env["LINKERD2_PROXY_CORES"] == "2"
        init_args = tuned["spec"]["initContainers"][0]["args"]
        assert init_args[init_args.index("--outbound-ports-to-ignore") + 1] == "3306"

        bad = await kube_client.create(
            PODS, app_pod("bad", node, {"config.linkerd.io/proxy-cpu-limit": "plenty"}), ns
        )
        assert "initContainers" not in bad["spec"]  # declined, but still admitted
    finally:
        await cleanup_config(kube_client, name)
    assert "proxy-cpu-limit" in injector.log.read_text()


async def test_pod_is_admitted_while_webhook_is_down(
    injector: RunningInjector,
    kube_cluster: KubeTestCluster,
    kube_client: KubeClient,
    kube_namespace: str,
) -> None:
    ns, node = kube_namespace, kube_cluster.node_name
    name = await register(kube_client, ns, injector.port, injector.ca)
    try:
        await wait_until_effective(kube_client, ns, node)
        injector.stop()
        pod = await kube_client.create(PODS, app_pod("while-down", node), ns)
        assert pod["metadata"]["name"] == "while-down"
        assert "initContainers" not in pod["spec"]
    finally:
        await cleanup_config(kube_client, name)


@pytest.mark.parametrize("policy", ["Fail"])
async def test_fail_policy_blocks_when_down(
    policy: str,
    kube_cluster: KubeTestCluster,
    kube_client: KubeClient,
    kube_namespace: str,
) -> None:
    """Installing with failurePolicy Fail makes the apiserver refuse pods instead."""
    ca = make_ca("unused")
    config = render_webhook_config(
        ca_bundle_pem=ca.cert_pem,
        target=WebhookTarget(url=f"https://127.0.0.1:{free_port()}/inject"),
        name=f"gossamer-injector-fail-{kube_namespace}",
        failure_policy="Fail",
        timeout_seconds=2,
    )
    config["webhooks"][0]["namespaceSelector"]["matchExpressions"].append(
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [kube_namespace]}
    )
    await kube_client.create(MUTATINGWEBHOOKCONFIGURATIONS, config)
    try:
        attempt = 0

        async def refused() -> bool:
            nonlocal attempt
            attempt += 1
            try:
                await kube_client.create(
                    PODS, app_pod(f"p{attempt}", kube_cluster.node_name), kube_namespace
                )
            except KubeApiError as exc:
                return exc.status == 500 and "gossamer-proxy-injector" in str(exc)
            return False

        assert await until("the Fail policy to refuse pods", refused, limit=30)
    finally:
        await cleanup_config(kube_client, config["metadata"]["name"])
