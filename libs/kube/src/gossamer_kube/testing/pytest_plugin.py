"""pytest fixtures for the real Kubernetes test cluster."""
