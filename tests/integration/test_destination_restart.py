"""Restarting kube-apiserver under an open ``Get`` stream loses no update.

The session's shared cluster is not restarted: this test runs its own
:class:`KubeTestCluster` and restarts only its kube-apiserver process
(``restart_apiserver``; etcd, controllers and kwok keep running).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from gossamer_api.proxy import destination_pb2, destination_pb2_grpc
from gossamer_destination.testing_cluster import DestinationProcess, EndpointView, apply_crds
from gossamer_kube.client import KubeClient
from gossamer_kube.config import KubeConfig
from gossamer_kube.resources import DEPLOYMENTS, PODS, SERVICEPROFILES, SERVICES
from gossamer_kube.testing import KubeTestCluster
from gossamer_kube.testing.pytest_plugin import locate_binaries_or_skip

pytestmark = pytest.mark.kube
WAIT = 90.0
T = TypeVar("T")


@pytest.fixture
def private_cluster() -> Iterator[KubeTestCluster]:
    cluster = KubeTestCluster(binaries=locate_binaries_or_skip())
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def until(what: str, probe: Callable[[], Awaitable[T | None]]) -> T:
    deadline = time.monotonic() + WAIT
    while True:
        value = await probe()
        if value is not None:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def deployment(replicas: int) -> dict[str, Any]:
    labels = {"app": "web"}
    return {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
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
    }


async def test_apiserver_restart_mid_stream_loses_no_update(
    private_cluster: KubeTestCluster, tmp_path: Path
) -> None:
    cluster = private_cluster
    apply_crds(cluster.admin())
    ns = "restart"
    cluster.admin().request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
    )
    dst = DestinationProcess(cluster.kubeconfig, tmp_path / "destination.log")
    try:
        dst.wait_ready(WAIT)
        async with KubeClient(KubeConfig.from_kubeconfig(cluster.kubeconfig)) as client:
            # Neither object waits for the namespace's default ServiceAccount (the Deployment's
            # pods do, and the controller retries them), so any error here is real.
            await client.create(
                SERVICES,
                {
                    "metadata": {"name": "web"},
                    "spec": {
                        "selector": {"app": "web"},
                        "ports": [{"port": 80, "targetPort": 8080}],
                    },
                },
                ns,
            )
            await client.create(DEPLOYMENTS, deployment(2), ns)

            async with grpc.aio.insecure_channel(dst.target) as channel:
                stub = destination_pb2_grpc.DestinationStub(channel)
                request = destination_pb2.GetDestination(path=f"web.{ns}.svc.cluster.local:80")

                async def open_profile() -> Any:
                    # UNKNOWN until the destination's cache has the Service; the proxy retries.
                    call = stub.GetProfile(request)
                    try:
                        await asyncio.wait_for(call.read(), WAIT)
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() != grpc.StatusCode.UNKNOWN:
                            raise
                        return None
                    return call

                profile = await until("GetProfile to find the service", open_profile)
                view = EndpointView(stub.Get(request))
                await view.until_size(2, WAIT)

                # A change made just before the restart, then the restart itself.
                await client.patch(DEPLOYMENTS, "web", {"spec": {"replicas": 3}}, ns)
                await asyncio.to_thread(cluster.restart_apiserver)
                await view.until_size(3, WAIT)

                # Changes after the restart reach the same, still-open streams.
                await client.patch(DEPLOYMENTS, "web", {"spec": {"replicas": 4}}, ns)
                await view.until_size(4, WAIT)
                await client.create(
                    SERVICEPROFILES,
                    {
                        "metadata": {"name": f"web.{ns}.svc.cluster.local"},
                        "spec": {"routes": [{"name": "all", "condition": {"pathRegex": "/.*"}}]},
                    },
                    ns,
                )
                updated = await asyncio.wait_for(profile.read(), WAIT)
                assert [r.metrics_labels["route"] for r in updated.routes] == ["all"]

                pods, _ = await client.list(PODS, ns, label_selector="app=web")
                running = {
                    p["status"]["podIP"]
                    for p in pods
                    if p.get("status", {}).get("podIP")
                    and not p["metadata"].get("deletionTimestamp")
                }
                assert {ip for ip, _ in view.addrs} == running
                view.call.cancel()
                profile.cancel()
        metrics = dst.metrics()
        assert "gossamer_informer_errors_total" in metrics
    finally:
        dst.stop()
