"""A resource to the proxies to tap: its live meshed pods, read from Kubernetes (I/O).

The selection is :func:`~gossamer_cli.viz.tap_query.tap_targets` (pure, tested there);
this only lists the namespace's pods, and its Services when a Service is tapped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from gossamer_kube.client import KubeClient
from gossamer_kube.resources import PODS, SERVICES

from gossamer_cli.viz.resources import Resource
from gossamer_cli.viz.tap_query import TapTarget, tap_targets

__all__ = ["pod_resolver"]


def pod_resolver(
    kube: KubeClient, *, control_plane_namespace: str, trust_domain: str
) -> Callable[[Resource, str], Awaitable[list[TapTarget]]]:
    async def resolve(resource: Resource, namespace: str) -> list[TapTarget]:
        pods, _ = await kube.list(PODS, namespace=namespace)
        services: list[dict[str, Any]] = []
        if resource.kind.name == "service":
            services, _ = await kube.list(SERVICES, namespace=namespace)
        return tap_targets(
            resource,
            pods,
            services,
            control_plane_namespace=control_plane_namespace,
            trust_domain=trust_domain,
        )

    return resolve
