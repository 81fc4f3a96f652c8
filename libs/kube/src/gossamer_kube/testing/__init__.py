"""A real Kubernetes control plane (etcd, kube-apiserver, controller-manager, kwok) for tests
and local mode; see :mod:`gossamer_kube.testing.cluster`."""

from gossamer_kube.testing.binaries import KubeBinaries, KubeBinariesMissingError
from gossamer_kube.testing.cluster import ClusterOptions, ClusterStartError, KubeTestCluster

__all__ = [
    "ClusterOptions",
    "ClusterStartError",
    "KubeBinaries",
    "KubeBinariesMissingError",
    "KubeTestCluster",
]
