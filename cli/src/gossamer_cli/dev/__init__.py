"""Local mode: the whole mesh on one Linux machine, every pod a network namespace.

The Kubernetes control plane is real (etcd, kube-apiserver, controller-manager, kwok from
``gossamer_kube.testing``), the Gossamer control plane runs as processes, and this package is
the kubelet: it runs the pods scheduled to the local node (a node kwok keeps alive), gives
them their IPs and reports their status.

Everything runs inside one dedicated *node* network namespace, so nothing here ever listens
on, or routes through, the host's own network: the apiserver and the control plane listen on
the node namespace's loopback and on its bridge, and each pod namespace hangs off that bridge.
"""
