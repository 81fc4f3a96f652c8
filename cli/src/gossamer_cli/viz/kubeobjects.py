"""What ``gossamer viz`` reads from Kubernetes: the resources of some kinds, pods, services.

Shared by the CLI commands and the web dashboard, so that both count meshed pods the same way
(:mod:`.meshed`) from one listing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gossamer_cli.viz.meshed import Key


@dataclass
class KubeView:
    #: kind name -> the (namespace, name) of every resource of that kind ("" namespace for
    #: namespaces).
    known: dict[str, list[Key]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)


async def kube_objects(
    kubeconfig: str | None, kinds: Sequence[str], namespace: str | None
) -> KubeView:
    """List the resources of ``kinds`` (within ``namespace``; None means every namespace),
    the pods, and the services when a kind is ``service``."""
    from gossamer_kube.client import KubeClient
    from gossamer_kube.config import KubeConfig
    from gossamer_kube.resources import (
        DAEMONSETS,
        DEPLOYMENTS,
        NAMESPACES,
        PODS,
        SERVICES,
        STATEFULSETS,
    )

    refs = {
        "deployment": DEPLOYMENTS,
        "statefulset": STATEFULSETS,
        "daemonset": DAEMONSETS,
        "pod": PODS,
        "service": SERVICES,
        "namespace": NAMESPACES,
    }
    view = KubeView()
    async with KubeClient(KubeConfig.load(kubeconfig)) as client:
        view.pods, _ = await client.list(PODS, namespace=namespace)
        if "service" in kinds:
            view.services, _ = await client.list(SERVICES, namespace=namespace)
        for kind in kinds:
            ref = refs.get(kind)
            if ref is None:
                continue
            if kind == "pod":
                items = view.pods
            elif kind == "service":
                items = view.services
            else:
                items, _ = await client.list(ref, namespace=namespace if ref.namespaced else None)
            found: list[Key] = []
            for item in items:
                meta = item["metadata"]
                if kind == "namespace":
                    if namespace is None or meta["name"] == namespace:
                        found.append(("", meta["name"]))
                else:
                    found.append((meta.get("namespace", ""), meta["name"]))
            view.known[kind] = found
    return view
