"""``gossamer prune``: control-plane objects the current install would no longer render.

As ``linkerd prune``: list, cluster-wide, every object of the kinds an install renders that
carries the ``linkerd.io/control-plane-ns=<namespace>`` label, render the install with the
same values (certificates do not change names, so placeholders stand in for them), and print
the objects found that the rendering does not contain, name only, for
``gossamer prune | kubectl delete -f -``.

Left alone: objects of an extension (labelled ``linkerd.io/extension``; ``viz uninstall``
owns those), objects another object owns (``ownerReferences``: they go with their owner),
and the meshed workloads' pods, which carry the same label but are not the control plane.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from gossamer_kube.resources import (
    CONFIGMAPS,
    CRONJOBS,
    DAEMONSETS,
    DEPLOYMENTS,
    MUTATINGWEBHOOKCONFIGURATIONS,
    SECRETS,
    SERVICEACCOUNTS,
    SERVICES,
    STATEFULSETS,
    VALIDATINGWEBHOOKCONFIGURATIONS,
    ResourceRef,
)

CONTROL_PLANE_NS_LABEL: Final = "linkerd.io/control-plane-ns"
EXTENSION_LABEL: Final = "linkerd.io/extension"

CLUSTERROLES: Final = ResourceRef(
    "rbac.authorization.k8s.io", "v1", "clusterroles", False, "ClusterRole"
)
CLUSTERROLEBINDINGS: Final = ResourceRef(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", False, "ClusterRoleBinding"
)
ROLES: Final = ResourceRef("rbac.authorization.k8s.io", "v1", "roles", True, "Role")
ROLEBINDINGS: Final = ResourceRef(
    "rbac.authorization.k8s.io", "v1", "rolebindings", True, "RoleBinding"
)
PODDISRUPTIONBUDGETS: Final = ResourceRef(
    "policy", "v1", "poddisruptionbudgets", True, "PodDisruptionBudget"
)

#: The kinds an install renders, or rendered in an earlier version.
PRUNABLE: Final = (
    MUTATINGWEBHOOKCONFIGURATIONS,
    VALIDATINGWEBHOOKCONFIGURATIONS,
    CLUSTERROLES,
    CLUSTERROLEBINDINGS,
    ROLES,
    ROLEBINDINGS,
    SERVICEACCOUNTS,
    CONFIGMAPS,
    SECRETS,
    SERVICES,
    DEPLOYMENTS,
    DAEMONSETS,
    STATEFULSETS,
    CRONJOBS,
    PODDISRUPTIONBUDGETS,
)

Key = tuple[str, str, str, str]  # (API group, kind, namespace, name)


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def key_of(obj: Mapping[str, Any], ref: ResourceRef | None = None) -> Key:
    meta = obj.get("metadata") or {}
    group = ref.group if ref is not None else _group(str(obj.get("apiVersion") or ""))
    kind = ref.kind if ref is not None else str(obj.get("kind") or "")
    return (group, kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def extraneous(
    rendered: Iterable[Mapping[str, Any]],
    found: Iterable[tuple[ResourceRef, Mapping[str, Any]]],
) -> list[dict[str, Any]]:
    """The objects ``found`` in the cluster that ``rendered`` does not contain, name only."""
    wanted = {key_of(o) for o in rendered}
    out = []
    seen: set[Key] = set()
    for ref, obj in found:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        if EXTENSION_LABEL in labels or meta.get("ownerReferences"):
            continue
        key = key_of(obj, ref)
        if key in wanted or key in seen:
            continue
        seen.add(key)
        name_only: dict[str, Any] = {"name": key[3]}
        if ref.namespaced:
            name_only["namespace"] = key[2]
        out.append({"apiVersion": ref.api_version, "kind": ref.kind, "metadata": name_only})
    return out


async def list_labelled(
    client: Any, namespace: str, kinds: Sequence[ResourceRef] = PRUNABLE
) -> list[tuple[ResourceRef, dict[str, Any]]]:
    """Every object of ``kinds``, in any namespace, labelled as ``namespace``'s control plane."""
    selector = f"{CONTROL_PLANE_NS_LABEL}={namespace}"
    found = []
    for ref in kinds:
        items, _ = await client.list(ref, None, label_selector=selector)
        found += [(ref, item) for item in items]
    return found
