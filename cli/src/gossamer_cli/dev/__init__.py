"""Local mode: the whole mesh on one Linux machine, every pod a network namespace.

The Kubernetes control plane is real (etcd, kube-apiserver, controller-manager, kwok from
``gossamer_kube.testing``), the Gossamer control plane runs as processes, and this package is
the kubelet: it runs the pods kwok places on the local node.

Everything runs inside one dedicated *node* network namespace, so nothing here ever listens
on, or routes through, the host's own network: the apiserver and the control plane listen on
the node namespace's loopback and on its bridge, and each pod namespace hangs off that bridge.
"""
