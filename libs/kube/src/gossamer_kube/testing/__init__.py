"""A real Kubernetes control plane (etcd, kube-apiserver, controller-manager, kwok) for tests."""
