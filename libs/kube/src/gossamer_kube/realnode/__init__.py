"""A real Kubernetes node on this machine (``make node-up``/``node-down``, ``make e2e`` without
Docker): kubelet, containerd, kube-proxy, cluster DNS and a registry around the test control
plane of :mod:`gossamer_kube.testing`. Like the kind suite it is not part of ``make test``, and
it starts programs that only ``make node-up`` installs (NODE_DEB_PACKAGES)."""
