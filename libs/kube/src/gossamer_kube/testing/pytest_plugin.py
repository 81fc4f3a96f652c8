"""pytest fixtures for the real Kubernetes test cluster (loaded from the root conftest.py).

* ``kube_cluster`` (session): one :class:`KubeTestCluster` for the whole run, started on first
  use, so a run that needs no cluster pays nothing.
* ``kube_namespace`` (function): a fresh namespace with its default ServiceAccount, deleted
  afterwards.
* ``kube_client`` (function): an async :class:`~gossamer_kube.client.KubeClient` as admin.

Tests using these fixtures are marked ``kube`` automatically. When the binaries cannot be had
the tests skip with the reason (the repository's root conftest.py turns that skip into a
failure under ``GOSSAMER_REQUIRE_E2E=1``, as it does every skip).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from gossamer_kube.client import KubeClient
from gossamer_kube.config import KubeConfig
from gossamer_kube.errors import KubeApiError
from gossamer_kube.testing.binaries import KubeBinaries, KubeBinariesMissingError
from gossamer_kube.testing.cluster import KubeTestCluster

KUBE_FIXTURES = frozenset({"kube_cluster", "kube_namespace", "kube_client"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if KUBE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kube)


def locate_binaries_or_skip() -> KubeBinaries:
    """The binaries, or a skip saying why not."""
    try:
        return KubeBinaries.locate()
    except KubeBinariesMissingError as exc:
        pytest.skip(f"Kubernetes test binaries unavailable: {exc}")


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeTestCluster]:
    cluster = KubeTestCluster(binaries=locate_binaries_or_skip())
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def kube_namespace(kube_cluster: KubeTestCluster) -> Iterator[str]:
    admin = kube_cluster.admin()
    name = f"t-{secrets.token_hex(4)}"
    admin.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    try:
        # Pods are refused until the namespace's default ServiceAccount exists.
        deadline = time.monotonic() + 30.0
        while True:
            try:
                admin.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")
                break
            except KubeApiError as exc:
                if not exc.not_found or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield name
    finally:
        try:
            admin.request("DELETE", f"/api/v1/namespaces/{name}")
        except KubeApiError as exc:
            if not exc.not_found:
                raise


@pytest_asyncio.fixture
async def kube_client(kube_cluster: KubeTestCluster) -> AsyncIterator[KubeClient]:
    async with KubeClient(KubeConfig.from_kubeconfig(kube_cluster.kubeconfig)) as client:
        yield client
