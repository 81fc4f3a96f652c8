"""Which pods belong to which resource, and how many of them are meshed (pure).

A pod is meshed when it runs a ``linkerd-proxy`` container (a native sidecar, as the injector
writes it, or a plain container). Pods that finished or are being deleted are not counted, as
in ``linkerd viz stat``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gossamer_cli.viz.scrape import PROXY_CONTAINER

Key = tuple[str, str]  # (namespace, name); namespace "" for namespaces


def is_meshed(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    return any(c.get("name") == PROXY_CONTAINER for c in containers)


def is_live(pod: Mapping[str, Any]) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not pod["metadata"].get("deletionTimestamp")


def owner(pod: Mapping[str, Any], kind: str) -> str | None:
    """The name of the ``kind`` (deployment, statefulset, daemonset) that owns ``pod``."""
    meta = pod["metadata"]
    for ref in meta.get("ownerReferences") or []:
        if not ref.get("controller"):
            continue
        owner_kind, name = ref.get("kind"), str(ref.get("name", ""))
        if kind == "deployment" and owner_kind == "ReplicaSet":
            suffix = "-" + str((meta.get("labels") or {}).get("pod-template-hash", ""))
            return name[: -len(suffix)] if suffix != "-" and name.endswith(suffix) else None
        if owner_kind and owner_kind.lower() == kind:
            return name
    return None


def selects(selector: Mapping[str, str], pod: Mapping[str, Any]) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def meshed_counts(
    kind: str, pods: Iterable[Mapping[str, Any]], services: Iterable[Mapping[str, Any]] = ()
) -> dict[Key, tuple[int, int]]:
    """``{(namespace, name): (meshed pods, pods)}`` for every resource of ``kind`` with pods."""
    counts: dict[Key, list[int]] = {}
    live = [p for p in pods if is_live(p)]
    for pod in live:
        ns, name = pod["metadata"].get("namespace", ""), pod["metadata"]["name"]
        keys: list[Key] = []
        if kind == "namespace":
            keys = [("", ns)]
        elif kind == "pod":
            keys = [(ns, name)]
        elif kind in ("deployment", "statefulset", "daemonset"):
            found = owner(pod, kind)
            keys = [(ns, found)] if found else []
        elif kind == "service":
            keys = [
                (ns, s["metadata"]["name"])
                for s in services
                if s["metadata"].get("namespace") == ns
                and selects((s.get("spec") or {}).get("selector") or {}, pod)
            ]
        for key in keys:
            entry = counts.setdefault(key, [0, 0])
            entry[0] += is_meshed(pod)
            entry[1] += 1
    return {k: (v[0], v[1]) for k, v in counts.items()}
