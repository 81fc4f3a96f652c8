"""gossamer_kube."""
